"""Arc2Face: the ArcFace embedding enters through the CLIP text encoder's input embeddings.

No new weights: the official `arc2face/` UNet and `encoder/` text encoder are standard diffusers /
transformers folders. `encode_identity` computes the prompt embedding; `check_arc2face_folders`
checks the official folders (`idgen.pipelines.load_arc2face_pipeline` assembles the pipeline).
"""

from idgen.adapters.arc2face.encoder import IDENTITY_PROMPT, encode_identity, id_token_id, tokenize_identity_prompt
from idgen.adapters.arc2face.loader import check_arc2face_folders

__all__ = [
    "IDENTITY_PROMPT",
    "check_arc2face_folders",
    "encode_identity",
    "id_token_id",
    "tokenize_identity_prompt",
]
