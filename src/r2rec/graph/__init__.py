"""The train-only user-item interaction graph and the chain sampler ``u0 -> i_a -> u1 -> i_b``."""

from r2rec.graph.graph import InteractionGraph, GraphConfig, build_graph, load_graph, graph_for_run
from r2rec.graph.chains import ChainBatch, ChainConfig, ChainSampler

__all__ = [
    "InteractionGraph", "GraphConfig", "build_graph", "load_graph", "graph_for_run",
    "ChainBatch", "ChainConfig", "ChainSampler",
]
