"""The latent-map scatter figure."""

from __future__ import annotations

import numpy as np


def map_figure(coords: np.ndarray, labels: np.ndarray | None, label_name: str, title: str, highlight: np.ndarray | None = None,
               query: np.ndarray | None = None):
    """Scatter of map coordinates; each point carries its dataset index (customdata) for click-to-decode."""
    import plotly.graph_objects as go

    dims = coords.shape[1]
    idx = np.arange(len(coords))
    scatter = go.Scatter3d if dims == 3 else go.Scattergl if len(coords) > 3000 else go.Scatter

    def trace(mask, name, **marker):
        xyz = {"x": coords[mask, 0], "y": coords[mask, 1]}
        if dims == 3:
            xyz["z"] = coords[mask, 2]
        text = [f"#{i} · {label_name}: {labels[i]}" if labels is not None else f"#{i}" for i in idx[mask]]
        return scatter(**xyz, mode="markers", name=name, customdata=idx[mask], text=text, hoverinfo="text",
                       marker={"size": 4 if dims == 3 else 7, "opacity": 0.85, **marker})

    fig = go.Figure()
    scale = labels is not None and np.issubdtype(np.asarray(labels).dtype, np.number) and len(np.unique(labels)) > 12
    if labels is None:
        fig.add_trace(trace(np.ones(len(coords), bool), "points"))
    elif scale:
        fig.add_trace(trace(np.ones(len(coords), bool), label_name, color=np.asarray(labels, float), colorscale="Viridis",
                            showscale=True, colorbar={"title": label_name}))
    else:
        for value in sorted(np.unique(labels), key=lambda v: (str(type(v)), v)):
            fig.add_trace(trace(np.asarray(labels) == value, str(value)))
    if highlight is not None and len(highlight):
        fig.add_trace(trace(np.isin(idx, highlight), "neighbours", color="rgba(0,0,0,0)", line={"color": "black", "width": 2}, size=12))
    if query is not None:
        q = {"x": query[:, 0], "y": query[:, 1], **({"z": query[:, 2]} if dims == 3 else {})}
        fig.add_trace(scatter(**q, mode="markers", name="your image", hoverinfo="name",
                              marker={"symbol": "diamond" if dims == 3 else "star", "size": 10 if dims == 3 else 18, "color": "red"}))
    # A colour bar takes the right edge, where the legend would sit on its title: the legend goes below the plot then.
    legend = {"itemsizing": "constant", **({"orientation": "h", "x": 0, "xanchor": "left", "y": -0.04, "yanchor": "top"}
                                           if scale else {})}
    if labels is not None and not scale:  # the colours' meaning: which label they show (a colour bar has its own title)
        legend["title"] = {"text": label_name}
    fig.update_layout(title=title, height=520, margin={"l": 10, "r": 10, "t": 40, "b": 40 if scale else 10}, legend=legend,
                      clickmode="event")
    return fig
