"""Pure torch flow matching: time shift, time distributions (`transport`), samplers and guidance (`sampling`).

Nothing is re-exported here, so that a stage that trains does not depend on the samplers (`dvc_stages.code_deps`)."""
