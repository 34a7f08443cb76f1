"""One Kedro pipeline per DVC stage."""
