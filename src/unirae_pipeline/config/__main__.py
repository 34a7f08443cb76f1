"""`python -m unirae_pipeline.config MARKER`: DVC's check_params stage (see `params.main`)."""

from .params import main

raise SystemExit(main())
