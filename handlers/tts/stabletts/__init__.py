"""StableTTS handlers: ``training``, ``inference`` and ``training_and_inference``.

They orchestrate; the ``tts`` package trains, synthesizes and reads the job's settings (``tts.job_settings``).
The shared steps live beside them: ``job_inputs`` (the base checkpoint and voice reference the manifest
names, the project's language tag), ``training_run`` (training with heartbeats and resumable state),
``synthesis`` (cells in, takes out) and ``listen_check`` (generated takes heard by the newest ASR model).
"""
