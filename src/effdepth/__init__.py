"""effdepth: measure how many layers of a language model do computation that matters.

Layer-index convention (used everywhere in this package):
    h_l    residual stream *entering* decoder layer l, l = 0 .. L-1; h_0 = token embeddings
    h_L    raw output of the last decoder layer (before the final norm)
    a_l    attention output of layer l, m_l its MLP output, c_l = a_l + m_l
    h_{l+1} = h_l + a_l + m_l
"""

__version__ = "0.1.0"

# The notebook API (effdepth.api) at the top level, imported on first use: ``import effdepth``
# stays cheap (the workflow imports the package while Snakemake parses it).
_API = (
    "measure",
    "subject",
    "extract",
    "run",
    "forward_table",
    "effective_depth",
    "train_lens",
    "options",
    "Measurement",
    "Subject",
)


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'effdepth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
