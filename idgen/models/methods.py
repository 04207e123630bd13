"""The application's methods and the registry components each one needs: plain tables, free of
torch and diffusers, for the CLI's parsers (`--method` choices), the outputs' provenance and the
demo. `idgen.models.recipes` builds the pipelines of these methods."""

#: The width of the ArcFace embedding the official identity adapters take.
ARCFACE_DIM = 512

# -- generation (`idgen generate`, the demo's Generate tab) -------------------------------------
GENERATION_METHODS = ("instantid", "instantid-sd15", "faceid", "faceid-plusv2", "faceid-sdxl", "faceid-portrait",
                      "arc2face", "pulid")
#: The registry components each method's real pipeline needs.
GENERATION_WEIGHTS = {"instantid": ("sdxl", "instantid_identitynet", "instantid_adapter"),
                      "instantid-sd15": ("sd15", "instantid_sd15"),
                      "faceid": ("sd15", "faceid_sd15"), "faceid-plusv2": ("sd15", "faceid_plusv2_sd15", "clip_vit_h"),
                      "faceid-sdxl": ("sdxl", "faceid_sdxl"), "faceid-portrait": ("sd15", "faceid_portrait_sd15"),
                      "arc2face": ("sd15", "arc2face_unet", "arc2face_encoder"),
                      "pulid": ("sdxl", "pulid", "eva_clip")}
#: The component a request's `adapter` path replaces (its `base` replaces the first of the weights).
GENERATION_ADAPTER = {"instantid": "instantid_adapter", "instantid-sd15": "instantid_sd15",
                      "faceid": "faceid_sd15", "faceid-plusv2": "faceid_plusv2_sd15", "faceid-sdxl": "faceid_sdxl",
                      "faceid-portrait": "faceid_portrait_sd15", "arc2face": "arc2face_unet", "pulid": "pulid"}
#: The base architecture of each method ("sdxl" or "sd15": style blocks, style adapter, ControlNets).
GENERATION_ARCHITECTURE = {m: "sdxl" if GENERATION_WEIGHTS[m][0] == "sdxl" else "sd15" for m in GENERATION_METHODS}
#: What each method takes besides its identity (the CLI and the demo refuse the rest by name).
MULTI_PERSON_METHODS = ("instantid", "instantid-sd15", "faceid", "faceid-plusv2", "faceid-sdxl", "faceid-portrait")
CONTROL_METHODS = ("instantid", "instantid-sd15")
IMG2IMG_METHODS = ("instantid",)
STYLE_IMAGE_METHODS = ("instantid", "faceid", "faceid-sdxl", "faceid-portrait")
NEGATIVE_NOISE_METHODS = ("instantid", "instantid-sd15", "faceid", "faceid-plusv2", "faceid-sdxl", "faceid-portrait")
#: The `--control` path that stands for a random miniature ControlNet of the embedded default.
TINY_CONTROLNET = "tiny"
#: The standard IP-Adapter (and its image encoder) a style reference image needs, per architecture.
STYLE_WEIGHTS = {"sdxl": ("style_adapter_sdxl", "clip_vit_bigg"), "sd15": ("style_adapter_sd15", "clip_vit_h")}

# -- identity inpainting and face swap (`idgen inpaint`, `idgen swap`) ---------------------------
EDIT_METHODS = ("pva", "faceid", "instantid")
#: The weights each method needs (registry names), checked to tell "not configured" from "partly".
EDIT_WEIGHTS = {"pva": ("sd15_inpaint", "pva_adapter"), "faceid": ("sd15_inpaint", "faceid_sd15"),
                "instantid": ("sdxl_inpaint", "instantid_identitynet", "instantid_adapter")}
EDIT_ADAPTER = {"pva": "pva_adapter", "faceid": "faceid_sd15", "instantid": "instantid_adapter"}

# -- restoration (`idgen restore`, `idgen eval restore`) ----------------------------------------
RESTORE_WEIGHTS = {"image": ("sd15", "restore_controlnet"), "video": ("svd", "svfr_unet", "svfr_id_linear")}
#: What a photo restoration with a clean reference of the person needs in addition (FaceID).
RESTORE_REFERENCE_WEIGHTS = ("faceid_sd15",)

# -- the face post-pass (`--enhance NAME[:W]` on generate, inpaint, swap, restore) --------------
#: The face restorers (`idgen.restorers.kinds.RESTORERS`) and the registry component of each.
ENHANCE_WEIGHTS = {"codeformer": ("codeformer",), "gfpgan": ("gfpgan",), "restoreformer": ("restoreformer",)}
ENHANCE_RESTORERS = tuple(ENHANCE_WEIGHTS)
#: The restorers with a fidelity weight (`NAME:W`).
ENHANCE_WEIGHTED = ("codeformer",)
