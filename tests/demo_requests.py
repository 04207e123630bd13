"""The demo's `/generate` API arguments, in the endpoint's order, for the tests that call it through
`gradio_client` (the People Dataframe takes Gradio's `{"headers", "data"}` value, not None)."""

from gradio_client import handle_file

from conftest import SHARED

FACE = str(SHARED / "faces" / "portrait_glasses.jpg")
NO_PEOPLE = {"headers": ["photo", "face", "region"], "data": []}


def generate_args(method="faceid", photo=FACE, **overrides) -> list:
    """`/generate`'s positional arguments: the defaults of the Generate tab, `overrides` by name."""
    args = dict(method=method, files=[handle_file(photo)], face_index=None, pose=None, prompt="photo of a person",
                negative="", steps=2, guidance=None, seed=3, identity_scale=None, control_scale=None, width=None,
                height=None, scheduler="default", num_images=1, identity_start=0, identity_end=1, style="none",
                style_image=None, style_scale=1.0, style_blocks="style", negative_noise=None, init_image=None,
                strength=None, control_kind="canny", control_path="", control_image=None, control_weight=0.5,
                people=NO_PEOPLE, mode="standard", fast_paths=False, fast_weights=None, lora=None, lora_scale=1.0,
                step_cache=0, memory="max", fp8=False, enhance="off", enhance_weight=0.5, enhance_blend=1.0)
    unknown = set(overrides) - set(args)
    if unknown:
        raise TypeError(f"unknown /generate arguments {sorted(unknown)}")
    args.update(overrides)
    return list(args.values())
