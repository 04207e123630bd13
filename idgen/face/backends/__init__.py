"""Face-analysis backends implementing `idgen.face.analyzer.FaceAnalyzer`: dlib (offline, 128-d) and
insightface (local ONNX packs, 512-d ArcFace)."""
