"""Face parsing (BiSeNet, CelebAMask-HQ classes) and occlusion masks.

- `FaceParser`: `[H, W, 3]` uint8 RGB face crop -> `[H, W]` labels (`CLASSES`), and masks of
  named classes or groups (`GROUPS`).
- `OcclusionModel`: facefusion's XSeg occluder ONNX models; `occlusion_from_parsing`: the fallback
  from a parsing. Occlusion masks are float32 `[H, W]` in [0, 1], 1 = occluded.
"""

from idgen.face.parsing.bisenet import BiSeNet, random_bisenet_state_dict
from idgen.face.parsing.labels import CLASSES, GROUPS, LABELS, label_ids, label_mask
from idgen.face.parsing.occlusion import (HEAD_CLASSES, OCCLUDER_FILES, OcclusionModel, face_hull, face_occlusion,
                                          occlusion_from_parsing, soften)
from idgen.face.parsing.parser import (FACEXLIB_FILE, OFFICIAL_FILE, PARSER_FILES, FaceParser, bisenet_layout,
                                       find_parser_file, load_bisenet)

__all__ = [
    "BiSeNet", "random_bisenet_state_dict", "CLASSES", "GROUPS", "LABELS", "label_ids", "label_mask",
    "HEAD_CLASSES", "OCCLUDER_FILES", "OcclusionModel", "face_hull", "face_occlusion", "occlusion_from_parsing", "soften",
    "FACEXLIB_FILE", "OFFICIAL_FILE", "PARSER_FILES", "FaceParser", "bisenet_layout", "find_parser_file",
    "load_bisenet",
]
