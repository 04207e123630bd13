"""Arc2Face identity encoding: the ArcFace embedding replaces the token embedding of "id" in
"photo of a id person", and the (fine-tuned) CLIP text encoder runs on that sequence.

Same math as the official `CLIPTextModelWrapper` + `project_face_embs`: token embeddings, the
"id" row replaced by the L2-normalised 512-d ArcFace vector zero-padded to the text width, then
position embeddings, the causal transformer and the final layer norm; the last hidden state is
the prompt embedding. Instead of a subclass that re-implements CLIP's forward (the official one
breaks on transformers 5), a temporary forward hook on the token-embedding layer swaps the row,
so transformers' own forward runs: the encoder stays a plain `CLIPTextModel`.
"""

from __future__ import annotations

import torch

from idgen.errors import IdgenError

IDENTITY_PROMPT = "photo of a id person"
ID_TOKEN = "id"


def id_token_id(tokenizer) -> int:
    """The vocabulary id of the "id" token. Raises IdgenError if "id" is not a single token."""
    ids = tokenizer.encode(ID_TOKEN, add_special_tokens=False)
    if len(ids) != 1:
        raise IdgenError(f'the tokenizer splits "{ID_TOKEN}" into {len(ids)} tokens; Arc2Face needs it as one token '
                         "(use the CLIP tokenizer Arc2Face was trained with).")
    return ids[0]


def tokenize_identity_prompt(tokenizer, prompt: str, batch_size: int, device) -> torch.Tensor:
    """`[batch_size, model_max_length]` input ids of `prompt`, which must contain "id" exactly once."""
    token = id_token_id(tokenizer)
    ids = tokenizer(prompt, truncation=True, padding="max_length", max_length=tokenizer.model_max_length,
                    return_tensors="pt").input_ids
    count = int((ids == token).sum())
    if count != 1:
        raise IdgenError(f'the Arc2Face prompt must contain the word "{ID_TOKEN}" exactly once (where the face goes); '
                         f"{prompt!r} has it {count} times. The official prompt is {IDENTITY_PROMPT!r}.")
    return ids.repeat(batch_size, 1).to(device)


def encode_identity(text_encoder, tokenizer, face_embeds: torch.Tensor, prompt: str = IDENTITY_PROMPT) -> torch.Tensor:
    """Prompt embeddings `[N, L, D]` for N normalised ArcFace embeddings `face_embeds` `[N, 512]`.

    Differentiable (the Arc2Face trainer fine-tunes `text_encoder` through it); the pipeline calls
    it under `no_grad`.

    Raises:
        IdgenError: the embedding is wider than the text encoder, or the prompt/tokenizer lacks "id".
    """
    width = text_encoder.config.hidden_size
    if face_embeds.shape[-1] > width:
        raise IdgenError(f"the text encoder is {width} wide, narrower than the {face_embeds.shape[-1]}-d face embedding.")
    device = text_encoder.device
    input_ids = tokenize_identity_prompt(tokenizer, prompt, face_embeds.shape[0], device)
    rows = input_ids == id_token_id(tokenizer)  # one True per row
    padded = torch.nn.functional.pad(face_embeds, (0, width - face_embeds.shape[-1]))

    def replace_id_row(module, args, output):
        output = output.clone()
        output[rows] = padded.to(device=output.device, dtype=output.dtype)
        return output

    handle = text_encoder.get_input_embeddings().register_forward_hook(replace_id_row)
    try:
        return text_encoder(input_ids)[0]
    finally:
        handle.remove()
