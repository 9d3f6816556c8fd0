"""The evaluation prompt sets of Section 4.2: Portraits and Scenes.

Portraits: "A [subject] is looking at the camera." for each subject. Scenes: free-form scenes in four
settings (Appendix D: daily life, professional, cultural/recreational, outdoor). The builtin Scenes set
below was written for this project so offline runs need no LLM; each template holds `{s}` where the
tagged subject goes, and the pronoun is fixed per subject.
"""

from __future__ import annotations

import pandas as pd

SETTINGS = ("daily life", "professional", "cultural", "outdoor")

PORTRAIT_TEMPLATE = "A {s} is looking at the camera."

BUILTIN_SCENES: dict[str, tuple[str, ...]] = {
    "daily life": (
        "A {s} reads a newspaper at a sunny kitchen table, steam rising from a cup of coffee.",
        "A {s} waits at a rainy bus stop, streetlights reflecting on the wet pavement.",
        "A {s} cooks pasta in a small apartment kitchen, warm light on the stove.",
    ),
    "professional": (
        "A {s} examines a sample under a microscope in a bright laboratory.",
        "A {s} presents a chart to colleagues in a glass-walled office.",
        "A {s} repairs a bicycle chain in a cluttered workshop lit by a single lamp.",
    ),
    "cultural": (
        "A {s} plays the violin on a dim stage under a single spotlight.",
        "A {s} paints a canvas in a sunlit art studio full of brushes.",
        "A {s} dances at a lively street festival with colorful lanterns overhead.",
    ),
    "outdoor": (
        "A {s} hikes along a misty mountain trail at dawn.",
        "A {s} sits on a beach at sunset, waves rolling in behind.",
        "A {s} walks through an autumn forest with golden leaves falling.",
    ),
}


def tag_subject(template: str, subject: str, index: int = 1) -> str:
    return template.replace("{s}", f"<subj{index}>{subject}</subj{index}>")


def portrait_prompts(subjects: tuple[str, ...]) -> pd.DataFrame:
    rows = [{"prompt_id": f"portrait-{s}", "subject": s, "setting": "portrait",
             "tagged": tag_subject(PORTRAIT_TEMPLATE, s)} for s in subjects]
    return pd.DataFrame(rows)


def builtin_scene_prompts(subjects: tuple[str, ...], per_subject: int) -> pd.DataFrame:
    """`per_subject` scenes per subject, cycling through the four settings so each is covered."""
    available = sum(len(v) for v in BUILTIN_SCENES.values())
    if per_subject > available:
        raise ValueError(f"the builtin Scenes set has {available} prompts per subject, {per_subject} requested; "
                         "lower prompts.scenes_per_subject or use prompts.backend: ollama")
    order = [(setting, i) for i in range(3) for setting in SETTINGS]
    rows = []
    for s in subjects:
        for setting, i in order[:per_subject]:
            rows.append({"prompt_id": f"scene-{s}-{setting.replace(' ', '_')}-{i}", "subject": s,
                         "setting": setting, "tagged": tag_subject(BUILTIN_SCENES[setting][i], s)})
    return pd.DataFrame(rows)


def world_scene_prompts(subjects: tuple[str, ...], scene_phrases: dict[str, str]) -> pd.DataFrame:
    """The synthetic world's Scenes set: "A {s} in a green park." for every scene the world draws (its setting
    is the scene's name), so every prompt names something the mini base model has seen."""
    rows = [{"prompt_id": f"scene-{s}-{scene.replace(' ', '_')}", "subject": s, "setting": scene,
             "tagged": tag_subject(f"A {{s}} {phrase}.", s)}
            for s in subjects for scene, phrase in scene_phrases.items()]
    return pd.DataFrame(rows)


def identity_table(subjects: tuple[str, ...], per_subject: int, seed: int) -> pd.DataFrame:
    """The identities to evaluate: one latent code per (subject, k), drawn from `code_seed`."""
    rows = []
    for si, s in enumerate(subjects):
        for k in range(per_subject):
            rows.append({"identity_id": f"{s}-{k}", "subject": s, "code_seed": seed * 10_000 + si * 1_000 + k})
    return pd.DataFrame(rows)
