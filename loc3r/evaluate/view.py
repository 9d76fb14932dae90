"""view.html: one self-contained interactive page of an evaluation or an inference (no network, no server).

Plotly draws the figures (its JavaScript embedded once, offline); a short script connects them:
- a scene selector and the scene's sampled frames as a strip;
- the bird's-eye map (metres, the video's BEV frame): the room from depth where known, the model's own map (each
  vision token at the (x, y) its layout head predicts, coloured by its pixels), the camera path, the objects, and
  every situation's true and predicted position joined by its error; hovering a vision token outlines its patch on
  its frame in the strip; clicking a situation shows its questions, answers, errors and facing distribution;
- a table of every prediction, filtered by family, by position error, by wrong answers only and by text; a row of
  a drawn scene opens it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from loc3r import geometry
from loc3r.assets import ASSETS
from loc3r.evaluate.baselines import family
from loc3r.io import atomic_path

PAGE = ASSETS / "view.html"  # the page's HTML, CSS and script; {{TITLE}}, {{PLOTLY}} and {{DATA}} filled in
MAX_POINTS = 4000  # room points drawn per scene
THUMBNAIL = 128  # frame strip height, pixels


@dataclass
class SceneView:
    """What the page draws of one video."""

    name: str  # scene id, or the input video's name
    frames: np.ndarray  # [T, S, S, 3] uint8, the model's frames
    grid: tuple[int, int]  # vision tokens per frame, rows x columns
    extent: float  # the fraction of the frame's height and width the tokens cover (geometry.token_cell_index)
    map_xy: np.ndarray  # [T, n, 2] the model's map
    map_colors: np.ndarray  # [T, n, 3] in [0, 1]
    trajectory: np.ndarray | None = None  # [T, 2]
    trajectory_label: str = "camera path"
    points: np.ndarray | None = None  # [N, 2] the room from depth (the truth)
    point_colors: np.ndarray | None = None  # [N, 3] in [0, 1]
    objects: list = field(default_factory=list)  # (label, (x, y))


def _rgb(colors: np.ndarray) -> list[str]:
    c = np.clip(np.round(np.asarray(colors) * 255), 0, 255).astype(int)
    return [f"rgb({r},{g},{b})" for r, g, b in c]


def _data_url(frame: np.ndarray) -> str:
    image = Image.fromarray(frame)
    scale = THUMBNAIL / image.height
    image = image.resize((max(1, round(image.width * scale)), THUMBNAIL), Image.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def scene_figure(scene: SceneView, records: list[dict], indices: list[int]):
    """The scene's bird's-eye Plotly figure; the situations of records[indices] carry their index as customdata."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if scene.points is not None and len(scene.points):
        keep = np.linspace(0, len(scene.points) - 1, min(MAX_POINTS, len(scene.points))).astype(int)
        fig.add_trace(go.Scatter(x=scene.points[keep, 0], y=scene.points[keep, 1], mode="markers",
                                 name="room from depth (truth)", hoverinfo="skip",
                                 marker=dict(size=3, color=_rgb(scene.point_colors[keep]))))
    T, n, _ = scene.map_xy.shape
    gh, gw = scene.grid
    t, k = np.divmod(np.arange(T * n), n)
    fig.add_trace(go.Scatter(
        x=scene.map_xy[..., 0].reshape(-1), y=scene.map_xy[..., 1].reshape(-1), mode="markers",
        name="the model's map (vision tokens)", customdata=np.stack([t, k // gw, k % gw], 1),
        hovertemplate="frame %{customdata[0]}, patch row %{customdata[1]}, column %{customdata[2]}"
                      "<br>x %{x:.2f} m, y %{y:.2f} m<extra>vision token</extra>",
        marker=dict(size=7, color=_rgb(scene.map_colors.reshape(-1, 3)), line=dict(width=0.5, color="#888"))))
    if scene.trajectory is not None and np.isfinite(scene.trajectory).all():
        fig.add_trace(go.Scatter(x=scene.trajectory[:, 0], y=scene.trajectory[:, 1], mode="lines+markers",
                                 name=scene.trajectory_label, line=dict(color="orange"), marker=dict(size=4),
                                 hovertemplate="camera %{pointNumber}<extra></extra>"))
    if scene.objects:
        fig.add_trace(go.Scatter(x=[float(c[0]) for _, c in scene.objects], y=[float(c[1]) for _, c in scene.objects],
                                 mode="text", text=[label for label, _ in scene.objects], name="objects",
                                 textfont=dict(size=10), hoverinfo="skip"))
    situated = [i for i in indices if records[i]["situated"]]
    truth = [i for i in situated if "gt_position_xy_m" in records[i]]
    if truth:
        ex, ey = [], []
        for i in truth:
            (x0, y0), (x1, y1) = records[i]["gt_position_xy_m"], records[i]["position_xy_m"]
            ex += [x0, x1, None]
            ey += [y0, y1, None]
        fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", name="position error", hoverinfo="skip",
                                 line=dict(color="gray", width=1, dash="dot")))
        fig.add_trace(positions(records, truth, "gt_position_xy_m", "true positions (click)", "truth", "green",
                                "circle"))
    if situated:
        fig.add_trace(positions(records, situated, "position_xy_m", "predicted positions (click)", "prediction", "red",
                                "x"))
    fig.update_layout(xaxis=dict(title="BEV x (m)"), yaxis=dict(title="BEV y (m)", scaleanchor="x", scaleratio=1),
                      margin=dict(l=50, r=10, t=30, b=40), legend=dict(font=dict(size=10)), height=560,
                      title=dict(text=scene.name, font=dict(size=13)), clickmode="event", hovermode="closest")
    return fig


def positions(records: list[dict], indices: list[int], field: str, name: str, kind: str, color: str, symbol: str):
    """The situations records[indices] as clickable markers at their `field` position (customdata: the index)."""
    import plotly.graph_objects as go

    return go.Scatter(x=[records[i][field][0] for i in indices], y=[records[i][field][1] for i in indices],
                      mode="markers", name=name, customdata=indices, text=[records[i]["situation"] for i in indices],
                      hovertemplate=f"%{{text}}<extra>{kind}</extra>", marker=dict(size=11, color=color, symbol=symbol))


def page_records(records: list[dict]) -> list[dict]:
    """What the table and the details show of each record."""
    keep = ("scene_id", "situation", "question", "answer", "gt_answers", "situated", "position_xy_m",
            "position_sigma_m", "yaw_deg", "gt_position_xy_m", "gt_yaw_deg", "position_error_m", "yaw_error_deg",
            "answer_score", "yaw_probs", "id")
    return [{k: r[k] for k in keep if k in r} | {"family": family(r)} for r in records]


def write_view(path: Path, title: str, scenes: list[SceneView], records: list[dict], score_name: str,
               scene_of: dict[str, str] | None = None) -> None:
    """Write the page (atomically). records: evaluation records (or infer's, without ground truth); scene_of maps a
    record's scene_id to the SceneView name drawing it (default: the same name)."""
    import plotly.io
    from plotly.offline import get_plotlyjs

    scene_of = scene_of or {s.name: s.name for s in scenes}
    by_scene: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_scene.setdefault(scene_of.get(r.get("scene_id", ""), ""), []).append(i)
    bins = len(records[0]["yaw_probs"]) if records else 36
    data = {
        "scoreName": score_name,
        "binCentresDeg": np.degrees(geometry.yaw_bin_centres(bins)).tolist(),
        "records": page_records(records),
        "scenes": [{"name": s.name, "frames": [_data_url(f) for f in s.frames], "grid": list(s.grid),
                    "extent": s.extent, "figure": json.loads(plotly.io.to_json(
                        scene_figure(s, records, by_scene.get(s.name, []))))} for s in scenes],
        "sceneOf": scene_of,
    }
    payload = json.dumps(data).replace("</", "<\\/")
    fills = {"TITLE": html.escape(title), "PLOTLY": get_plotlyjs(), "DATA": payload}
    page = re.sub(r"\{\{(TITLE|PLOTLY|DATA)\}\}", lambda m: fills[m.group(1)], PAGE.read_text(encoding="utf-8"))
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
