"""idgen: identity-preserving image generation with diffusion models.

Subpackages:
    idgen.face        face detection, keypoints, embeddings, alignment (dlib / insightface)
    idgen.conditioning keypoint images and face masks
    idgen.models      model configuration, resolution and the registry of known components
    idgen.testing     tiny seeded random-weight models for tests and the embedded default
    idgen.pipelines   diffusers pipelines (InstantID, Arc2Face, IP-Adapter-FaceID, ...)
    idgen.adapters    identity adapter modules and their checkpoint loaders
    idgen.train       trainers
"""

__version__ = "0.1.0"
