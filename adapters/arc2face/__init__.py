"""Arc2Face: the ArcFace embedding enters through the CLIP text encoder's input embeddings.

No new weights: the official `arc2face/` UNet and `encoder/` text encoder are standard diffusers /
transformers folders. `encode_identity` computes the prompt embedding; `load_arc2face_pipeline`
assembles the pipeline from the official folders.
"""

from .encoder import IDENTITY_PROMPT, encode_identity, id_token_id, tokenize_identity_prompt
from .loader import check_arc2face_folders, load_arc2face_pipeline

__all__ = [
    "IDENTITY_PROMPT",
    "check_arc2face_folders",
    "encode_identity",
    "id_token_id",
    "load_arc2face_pipeline",
    "tokenize_identity_prompt",
]
