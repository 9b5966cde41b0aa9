"""effdepth: measure how many layers of a language model do computation that matters.

Layer-index convention (used everywhere in this package):
    h_l    residual stream *entering* decoder layer l, l = 0 .. L-1; h_0 = token embeddings
    h_L    raw output of the last decoder layer (before the final norm)
    a_l    attention output of layer l, m_l its MLP output, c_l = a_l + m_l
    h_{l+1} = h_l + a_l + m_l
"""

__version__ = "0.1.0"
