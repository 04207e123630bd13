"""Style beside identity: the official InstantID app's prompt style templates as named presets, and
InstantStyle's block selections for a style reference image.

A style *preset* rewrites the prompt (`apply_style_preset`), exactly as the InstantID app's
`apply_style` does. A style *reference* is a standard IP-Adapter image (`ip-adapter_sdxl.bin` /
`ip-adapter_sd15.bin` with its CLIP image encoder) injected only into the attention blocks that
carry style (and optionally layout), as InstantStyle does; the identity adapter keeps acting in
every block. `style_block_scales` gives that selection in diffusers' `set_ip_adapter_scale`
format. Plain tables and string functions: no torch.
"""

from __future__ import annotations

from typing import Optional, Union

from idgen.errors import IdgenError

_NEGATIVE = ("(lowres, low quality, worst quality:1.2), (text:1.2), watermark, (frame:1.2), deformed, ugly, "
             "deformed eyes, blur, out of focus, blurry, deformed cat, deformed, photo, anthropomorphic cat, "
             "monochrome, photo, pet collar, gun, weapon, blue, 3d, drones, drone, buildings in background, green")

#: Preset name -> (prompt template with `{prompt}`, negative prompt): the InstantID app's
#: `gradio_demo/style_template.py`, under lower-case names.
STYLE_PRESETS: dict[str, tuple[str, str]] = {
    "none": ("{prompt}", ""),
    "watercolor": (
        "watercolor painting, {prompt}. vibrant, beautiful, painterly, detailed, textural, artistic",
        "(lowres, low quality, worst quality:1.2), (text:1.2), watermark, anime, photorealistic, 35mm film, "
        "deformed, glitch, low contrast, noisy"),
    "film-noir": (
        "film noir style, ink sketch|vector, {prompt} highly detailed, sharp focus, ultra sharpness, monochrome, "
        "high contrast, dramatic shadows, 1940s style, mysterious, cinematic", _NEGATIVE),
    "neon": (
        "masterpiece painting, buildings in the backdrop, kaleidoscope, lilac orange blue cream fuchsia bright vivid "
        "gradient colors, the scene is cinematic, {prompt}, emotional realism, double exposure, watercolor ink pencil, "
        "graded wash, color layering, magic realism, figurative painting, intricate motifs, organic tracery, polished",
        _NEGATIVE),
    "jungle": (
        'waist-up "{prompt} in a Jungle" by Syd Mead, tangerine cold color palette, muted colors, detailed, 8k,'
        "photo r3al,dripping paint,3d toon style,3d style,Movie Still", _NEGATIVE),
    "mars": (
        "{prompt}, Post-apocalyptic. Mars Colony, Scavengers roam the wastelands searching for valuable resources, "
        "rovers, bright morning sunlight shining, (detailed) (intricate) (8k) (HDR) (cinematic lighting) (sharp focus)",
        _NEGATIVE),
    "vibrant-color": (
        "vibrant colorful, ink sketch|vector|2d colors, at nightfall, sharp focus, {prompt}, highly detailed, sharp "
        "focus, the clouds,colorful,ultra sharpness", _NEGATIVE),
    "snow": (
        "cinema 4d render, {prompt}, high contrast, vibrant and saturated, sico style, surrounded by magical glow,"
        "floating ice shards, snow crystals, cold, windy background, frozen natural landscape in background  "
        "cinematic atmosphere,highly detailed, sharp focus, intricate design, 3d, unreal engine, octane render, CG "
        "best quality, highres, photorealistic, dramatic lighting, artstation, concept art, cinematic, epic Steven "
        "Spielberg movie still, sharp focus, smoke, sparks, art by pascal blanche and greg rutkowski and repin, "
        "trending on artstation, hyperrealism painting, matte painting, 4k resolution", _NEGATIVE),
    "line-art": (
        "line art drawing {prompt} . professional, sleek, modern, minimalist, graphic, line art, vector graphics",
        "anime, photorealistic, 35mm film, deformed, glitch, blurry, noisy, off-center, deformed, cross-eyed, closed "
        "eyes, bad anatomy, ugly, disfigured, mutated, realism, realistic, impressionism, expressionism, oil, acrylic"),
}


def apply_style_preset(name: str, prompt: str, negative_prompt: str = "") -> tuple[str, str]:
    """`(prompt, negative_prompt)` rewritten by preset `name` (the InstantID app's rule: the
    template's `{prompt}` replaced, the preset's negative prompt + " " + the user's).

    Raises:
        IdgenError: `name` is not a preset.
    """
    if name not in STYLE_PRESETS:
        raise IdgenError(f"unknown style preset {name!r}; choose one of {', '.join(STYLE_PRESETS)}.")
    if name == "none":
        return prompt, negative_prompt
    template, negative = STYLE_PRESETS[name]
    return template.replace("{prompt}", prompt), f"{negative} {negative_prompt}".strip()


#: Which attention blocks a style reference acts in (InstantStyle). SDXL: `up_blocks.0.attentions.1`
#: carries style, `down_blocks.2.attentions.1` layout (InstantStyle paper, section 3). SD1.5 is
#: InstantStyle's experimental choice (`infer_style_sd15.py`): `up_blocks.1` style, plus
#: `down_blocks.2` and the mid block for layout. Said by structure, so it holds for any UNet of
#: the architecture (the tiny test models too): style = the first up block with attention, layout
#: = the last down block with attention; SDXL picks the second transformer of each, SD1.5 the
#: whole block (and, for layout, the mid block).
STYLE_BLOCKS = ("style", "style+layout", "all")
#: Attention blocks of the real UNets: part -> {block index: transformers in it}.
SDXL_ATTENTION_BLOCKS = {"down": {1: 2, 2: 2}, "up": {0: 3, 1: 3}}
SD15_ATTENTION_BLOCKS = {"down": {0: 2, 1: 2, 2: 2}, "up": {1: 3, 2: 3, 3: 3}}


def style_block_scales(architecture: str, blocks: str, scale: float,
                       attention_blocks: Optional[dict] = None) -> Union[float, dict]:
    """The style reference's per-block scale in diffusers' `set_ip_adapter_scale` format: `scale`
    in the chosen blocks, 0 elsewhere (a plain float for "all": the original IP-Adapter).

    Args:
        architecture: "sdxl" or "sd15".
        blocks: one of `STYLE_BLOCKS`.
        scale: the style strength (0 removes the style reference exactly).
        attention_blocks: the UNet's attention blocks, `{"down": {i: n}, "up": {i: n}}` (n
            transformers in block i); default the real architecture's.
    """
    if architecture not in ("sdxl", "sd15"):
        raise IdgenError(f"style blocks are defined for sdxl and sd15, not {architecture!r}.")
    if blocks not in STYLE_BLOCKS:
        raise IdgenError(f"style blocks must be one of {', '.join(STYLE_BLOCKS)}, got {blocks!r}.")
    if blocks == "all":
        return float(scale)
    layout = attention_blocks or (SDXL_ATTENTION_BLOCKS if architecture == "sdxl" else SD15_ATTENTION_BLOCKS)
    scale = float(scale)

    def pick(part: str, index: int) -> dict:
        if architecture == "sd15":
            return {part: {f"block_{index}": scale}}
        count = layout[part][index]
        return {part: {f"block_{index}": [scale if i == min(1, count - 1) else 0.0 for i in range(count)]}}

    chosen = pick("up", min(layout["up"]))
    if blocks == "style+layout":
        chosen.update(pick("down", max(layout["down"])))
        if architecture == "sd15":
            chosen["mid"] = scale
    return chosen
