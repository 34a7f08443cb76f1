"""Lightning modules, EMA, schedules and the shared fit loop."""
