"""Face restorers that load the official weights unchanged (CodeFormer, GFPGAN, RestoreFormer++):
each a torch module `[B, 3, 512, 512]` in [-1, 1] RGB -> the same, with a loader that checks the
official file's keys."""
