"""The train-only user-item interaction graph and the chain sampler ``u0 -> i_a -> u1 -> i_b``."""

from r2rec.graph.chains import ChainBatch, ChainConfig, ChainSampler
from r2rec.graph.graph import GraphConfig, InteractionGraph, build_graph, graph_for_run, load_graph

__all__ = [
    "InteractionGraph",
    "GraphConfig",
    "build_graph",
    "load_graph",
    "graph_for_run",
    "ChainBatch",
    "ChainConfig",
    "ChainSampler",
]
