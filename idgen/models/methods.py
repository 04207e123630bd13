"""The application's methods and the registry components each one needs: plain tables, free of
torch and diffusers, for the CLI's parsers (`--method` choices), the outputs' provenance and the
demo. `idgen.models.recipes` builds the pipelines of these methods."""

# -- generation (`idgen generate`, the demo's Generate tab) -------------------------------------
GENERATION_METHODS = ("instantid", "faceid", "faceid-plusv2", "arc2face")
#: The registry components each method's real pipeline needs.
GENERATION_WEIGHTS = {"instantid": ("sdxl", "instantid_identitynet", "instantid_adapter"),
                      "faceid": ("sd15", "faceid_sd15"), "faceid-plusv2": ("sd15", "faceid_plusv2_sd15", "clip_vit_h"),
                      "arc2face": ("sd15", "arc2face_unet", "arc2face_encoder")}
#: The component a request's `adapter` path replaces (its `base` replaces the first of the weights).
GENERATION_ADAPTER = {"instantid": "instantid_adapter", "faceid": "faceid_sd15",
                      "faceid-plusv2": "faceid_plusv2_sd15", "arc2face": "arc2face_unet"}

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
