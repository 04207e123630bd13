"""Media kit: video reading and writing (`video`), per-face video processing on tracked faces
(`video_faces`), synthetic degradations for restoration (`degrade`) and restoration metrics
(`metrics`)."""
