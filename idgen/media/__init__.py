"""Media kit: video reading and writing (`video`), per-face video processing on tracked faces
(`video_faces`), synthetic degradations for restoration (`degrade`) and restoration metrics
(`metrics`)."""

#: Denoising steps of the video jobs (`idgen swap`/`idgen inpaint` on a video, `idgen restore` on a
#: video, the demo's tabs) when none are given: fewer than the photo defaults (30-50), with the
#: pipeline's own scheduler, since every frame costs a full sampling; `--steps` overrides it. Here,
#: not in `video_faces`, so the CLI's help reads it without importing OpenCV.
VIDEO_STEPS = 12
