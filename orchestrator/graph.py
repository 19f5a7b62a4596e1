"""The refinement loop as a LangGraph ``StateGraph``.

retrieve -> generate -> verify -> (record | critique -> hint -> generate | generate)
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from orchestrator import nodes
from orchestrator.routing import CRITIQUE, GENERATE, RECORD, after_verify
from orchestrator.state import LoopContext, LoopState


def _route(state: LoopState) -> str:
    return after_verify(state.get("stop_reason"), state["hint_policy"])


def build_graph(checkpointer: Any = None):
    """Compile the loop. With a checkpointer, each task is a thread that can resume."""
    graph = StateGraph(LoopState, context_schema=LoopContext)
    graph.add_node("retrieve", nodes.retrieve)
    graph.add_node(GENERATE, nodes.generate)
    graph.add_node("verify", nodes.verify)
    graph.add_node(CRITIQUE, nodes.critique)
    graph.add_node("hint", nodes.hint)
    graph.add_node(RECORD, nodes.record)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", GENERATE)
    graph.add_edge(GENERATE, "verify")
    graph.add_conditional_edges("verify", _route, [RECORD, GENERATE, CRITIQUE])
    graph.add_edge(CRITIQUE, "hint")
    graph.add_edge("hint", GENERATE)
    graph.add_edge(RECORD, END)
    return graph.compile(checkpointer=checkpointer)
