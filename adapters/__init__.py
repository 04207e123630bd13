"""Identity adapter modules and their checkpoint loaders (importable as `idgen.adapters`).

One subpackage per method, each with its projection module, attention processor and an
explicit official-key map: `instantid`, `faceid`, `arc2face`.
"""
