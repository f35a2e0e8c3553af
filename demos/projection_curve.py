"""Plotly figures shown by the tabs (built from plain numbers, no model code)."""

from __future__ import annotations

from collections.abc import Sequence


def projection_curve(history: Sequence[tuple[int, float, float]], loss_name: str):
    """PSNR (left axis) and loss (right axis, log) against optimisation step."""
    import plotly.graph_objects as go

    steps = [h[0] for h in history]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=[h[2] for h in history], name="PSNR (dB)", line={"color": "#1f77b4"}))
    fig.add_trace(go.Scatter(x=steps, y=[h[1] for h in history], name=f"loss ({loss_name})", yaxis="y2", line={"color": "#ff7f0e"}))
    fig.update_layout(
        height=260, margin={"l": 40, "r": 40, "t": 10, "b": 30}, legend={"orientation": "h", "y": -0.25},
        xaxis={"title": "step"}, yaxis={"title": "PSNR (dB)"},
        yaxis2={"title": "loss", "overlaying": "y", "side": "right", "type": "log"},
    )
    return fig
