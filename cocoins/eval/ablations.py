"""The ablation tables of the paper (Tables 3, 4, 5, 9, 10, 11, 12, and Fig. 5's supervised mapper): each row a
set of `dvc exp run -S` settings, with the paper's numbers beside it. `cocoins.eval.ablate` queues and renders them.

Each row sets every parameter its table varies (the paper's own values for the "ours" row), so a table
means the same whatever params.yaml holds. The README's row -> `-S` list is the same mapping.

Columns: the paper measures face Sim and Div on Portraits and CLIP (prompt fidelity) on Scenes (Section 4.4),
so Sim = `portraits.face_sim`, Div = `portraits.face_div`, CLIP = `scenes.clip` of reports/eval/metrics.json.
The latent-space Sim / Div on Portraits are added because they exist offline too, and so is the mini-world's
exact identity metric (`id ...`, a trait classifier; Portraits and Scenes, with the no-pseudo-word baseline) and its
scene fidelity on Scenes (`scene fid`: how surely the classifier's scene head reads the prompted scene; the
mini-world's stand-in for CLIP). Table 9's MSE CLIP (0.193)
is printed as in the paper; it equals Table 1's Portraits CLIP while every other "ours" row reads 0.290.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

METRICS_FILE = "reports/eval/metrics.json"
# column -> key in metrics.json (flattened the way `dvc exp show` flattens it)
COLUMNS = {"Sim": "portraits.face_sim", "Div": "portraits.face_div", "CLIP": "scenes.clip",
           # the mini-world's exact identity metric (trait classifier), on both sets, and the no-code baseline
           "id Sim": "portraits.identity_sim", "id Div": "portraits.identity_div",
           "base id Sim": "portraits.base_identity_sim", "base id Div": "portraits.base_identity_div",
           "id Sim Scenes": "scenes.identity_sim", "id Div Scenes": "scenes.identity_div",
           "base id Sim Scenes": "scenes.base_identity_sim", "base id Div Scenes": "scenes.base_identity_div",
           # prompt fidelity in the mini-world (Table 4's main effect): the classifier's scene head reads the
           # prompted scene; the base model's renders of the same jobs beside it
           "scene fid": "scenes.scene_fidelity", "base scene fid": "scenes.base_scene_fidelity",
           "latent Sim": "portraits.latent_sim", "latent Div": "portraits.latent_div"}
PAPER_COLUMNS = ("Sim", "Div", "CLIP")
# Issue 12's yardsticks, computed per experiment before averaging over seeds: the codes' Div as a share of the
# base model's per-image Div on the same jobs (target 0.85), and scene fidelity as a share of the base's (0.9).
RATIOS = {"id Div share": ("id Div", "base id Div"), "id Div share Scenes": ("id Div Scenes", "base id Div Scenes"),
          "scene fid share": ("scene fid", "base scene fid")}


@dataclass(frozen=True)
class Row:
    label: str
    settings: tuple[str, ...]             # `-S key=value` overrides
    paper: tuple[Optional[float], Optional[float], Optional[float]]   # Sim, Div, CLIP as printed (None: not printed)
    slug: str


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    rows: tuple[Row, ...]


def _row(label: str, slug: str, settings: str, paper: tuple[Optional[float], ...]) -> Row:
    return Row(label, tuple(settings.split()), paper, slug)


OURS = (0.600, 0.799, 0.290)

TABLES: dict[str, Table] = {t.name: t for t in (
    Table("table3", "Table 3: ablating the consistency loss", (
        _row("Pos", "pos", "loss.negative=none loss.schedule=true", (0.394, 0.500, 0.293)),
        _row("Pos + Neg", "pos-neg", "loss.negative=reciprocal loss.schedule=false", (0.492, 0.750, 0.290)),
        _row("Pos + Neg (subtract)", "pos-neg-subtract", "loss.negative=subtract loss.schedule=false",
             (0.380, 0.444, 0.294)),
        _row("Pos + Neg + Schedule (ours)", "ours", "loss.negative=reciprocal loss.schedule=true", OURS),
    )),
    Table("table4", "Table 4: ablating the background loss", (
        _row("Consistency Loss", "consistency", "loss.mask=false loss.background=false", (0.444, 0.395, 0.138)),
        _row("+ Mask", "mask", "loss.mask=true loss.background=false", (0.619, 0.352, 0.128)),
        _row("+ Mask + Background (ours)", "ours", "loss.mask=true loss.background=true", OURS),
    )),
    Table("table5", "Table 5: prompts and noise of anchor and positive", (
        _row("prompts =, noise !=", "same-prompt", "triplet.same_prompt=true triplet.same_noise=false",
             (0.548, 0.686, 0.290)),
        _row("prompts !=, noise =", "same-noise", "triplet.same_prompt=false triplet.same_noise=true",
             (0.306, 0.772, 0.292)),
        _row("prompts !=, noise != (ours)", "ours", "triplet.same_prompt=false triplet.same_noise=false", OURS),
    )),
    # Section 3.3 and Fig. 5 give the supervised mapper (noise prediction on identity-annotated images) as
    # pictures only, so it has no printed numbers; here it is scored on the same protocol as the method.
    Table("fig5", "Fig. 5: a mapper trained with noise prediction on identities against the contrastive one", (
        _row("noise prediction (supervised)", "supervised", "train.objective=noise_prediction", (None, None, None)),
        _row("contrastive (ours)", "ours", "train.objective=contrastive", OURS),
    )),
    Table("table9", "Table 9: distance function", (
        _row("MSE (ours)", "mse", "loss.distance=mse", (0.600, 0.799, 0.193)),
        _row("DreamSim", "dreamsim", "loss.distance=dreamsim", (0.314, 0.724, 0.291)),
    )),
    Table("table10", "Table 10: background loss weight lambda_back", (
        _row("lambda_back = 10", "lb10", "loss.lambda_back=10", (0.637, 0.603, 0.265)),
        _row("lambda_back = 30 (ours)", "lb30", "loss.lambda_back=30", OURS),
        _row("lambda_back = 50", "lb50", "loss.lambda_back=50", (0.516, 0.707, 0.292)),
    )),
    Table("table11", "Table 11: negative distance weight gamma", (
        _row("gamma = 1e-4", "g1e-4", "loss.gamma=1e-4", (0.666, 0.766, 0.288)),
        _row("gamma = 1e-5 (ours)", "g1e-5", "loss.gamma=1e-5", OURS),
        _row("gamma = 1e-6", "g1e-6", "loss.gamma=1e-6", (0.445, 0.635, 0.293)),
    )),
    Table("table12", "Table 12: negative weight schedule exponent beta", (
        _row("beta = 1", "b1", "loss.beta=1", (0.528, 0.735, 0.291)),
        _row("beta = 2 (ours)", "b2", "loss.beta=2", OURS),
        _row("beta = 3", "b3", "loss.beta=3", (0.520, 0.710, 0.291)),
    )),
)}


def experiment_name(table: Table, row: Row) -> str:
    """The `dvc exp run -n` name of a row (a valid git ref name)."""
    return f"{table.name}-{row.slug}".replace(".", "p")
