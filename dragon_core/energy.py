"""DragonDiffusion's feature-correspondence energies, as the official code computes them.

Features are lists of [C, N] maps on the feature grid (one per decoder stage). "Attract" terms are
w / (1 + 4 S) of a mean similarity S (the paper's 1/(alpha + beta S) with alpha=1, beta=4); "repel"
terms are w * S. s_hat = (1 + cos) / 2. Official forms: the move/resize edit and content terms use the
raw cosine (`attract_raw`), every other term s_hat. Two opt-ins of Dragon Guidance Setup change them:
`monotone` (s_hat in the move terms too) and `centred` (cross-image terms on mean-free features).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Feats = list[torch.Tensor]  # each [C, N]


def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-cell cosine similarity over channels of two [C, n] tensors."""
    return F.cosine_similarity(a, b, dim=0, eps=1e-6)


def s_hat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (1 + cos(a, b)) / 2


def attract(w: float, sim: torch.Tensor) -> torch.Tensor:
    return w / (1 + 4 * sim)


# The raw-cosine attract term w / (1 + 4 cos) has a pole at cos = -1/4. Below this cosine it is continued
# by its tangent (same value and slope at the joint), so it stays finite and keeps decreasing as the
# similarity rises; above it the value and gradient are exactly the official ones.
POLE_GUARD = -0.2
# The monotone opt-in puts s_hat into the move terms: w / (3 + 2 cos) has half the official slope at
# cos = 1, so its weight is doubled: the same step where the features already agree (the content term,
# mean cosine about 0.98), 0.83x the official step at cos 0.8 and 0.37x at cos 0.3 (where the official
# term steepens toward its pole).
MONOTONE_GAIN = 2.0


def attract_raw(w: float, mean_cos: torch.Tensor) -> torch.Tensor:
    """The official move/resize attract term of a mean raw cosine, guarded against its pole (POLE_GUARD)."""
    c0 = POLE_GUARD
    inside = w / (1 + 4 * mean_cos.clamp(min=c0))
    tangent = w / (1 + 4 * c0) - 4 * w / (1 + 4 * c0) ** 2 * (mean_cos - c0)
    return torch.where(mean_cos >= c0, inside, tangent)


def centred(f: torch.Tensor) -> torch.Tensor:
    """Features relative to their image's mean feature, for terms that compare two different images.

    Opt-in (`centred_features`): the official cross-image terms compare raw features, which carry a
    large image-wide component (the scene's overall look). Matched across two images, it pulls in the
    reference image's overall look: on the toy model the pasted object took the colour of the
    reference's background (settings scenes: paste background 22.2 -> 27.8 dB, appearance 20.9 -> 29.8).
    """
    return f - f.mean(dim=1, keepdim=True)


def _move_attract(w: float, a: torch.Tensor, b: torch.Tensor, monotone: bool) -> torch.Tensor:
    if monotone:
        return attract(MONOTONE_GAIN * w, s_hat(a, b).mean())
    return attract_raw(w, cos(a, b).mean())


def move_energy(gen: Feats, ref: Feats, *, target: torch.Tensor, source: torch.Tensor, other: torch.Tensor,
                vacated: torch.Tensor, inpaint_ref: torch.Tensor, w_edit: float, w_content: float,
                w_contrast: float, w_inpaint: float, monotone: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Object move/resize: (E_edit, E_cons).

    target: flat target cells; source: their source cells (raster-paired); other: unchanged cells;
    vacated: cells the object leaves; inpaint_ref: cells whose look the vacated area should take.
    Weights per stage as in the official code: edit, content and contrast averaged over stages,
    inpaint summed. The edit and content terms take the raw cosine, as the official code
    (`attract_raw`, pole-guarded); `monotone` (opt-in) uses s_hat with MONOTONE_GAIN instead.
    """
    n = len(gen)
    e_edit = gen[0].new_zeros(())
    e_cons = gen[0].new_zeros(())
    for fg, fr in zip(gen, ref):
        e_edit = e_edit + _move_attract(w_edit, fg[:, target], fr[:, source], monotone) / n
        if other.numel():
            e_cons = e_cons + _move_attract(w_content, fr[:, other], fg[:, other], monotone) / n
        if vacated.numel():
            if w_contrast:
                e_cons = e_cons + w_contrast * s_hat(fg[:, vacated], fr[:, vacated]).mean() / n
            if w_inpaint and inpaint_ref.numel():
                g_mean = fg[:, vacated].mean(dim=1, keepdim=True)
                r_mean = fr[:, inpaint_ref].mean(dim=1, keepdim=True)
                e_cons = e_cons + attract(w_inpaint, s_hat(g_mean, r_mean).mean())
    return e_edit, e_cons


def drag_energy(gen: Feats, ref: Feats, *, patches: list[tuple[torch.Tensor, torch.Tensor]],
                outside: torch.Tensor, w_edit: float, w_content: float, w_inpaint: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Point drag: (E_edit, E_cons), averaged over stages and pairs.

    E_edit pulls the target patch toward the handle patch of the reference and pushes the handle
    patch (minus its overlap with the target) away from its old content; E_cons holds the cells
    outside the editable region.
    """
    n = len(gen)
    e_edit = gen[0].new_zeros(())
    e_cons = gen[0].new_zeros(())
    for fg, fr in zip(gen, ref):
        for handle, target in patches:
            e = attract(w_edit, s_hat(fg[:, target], fr[:, handle]).mean())
            vac = handle[~torch.isin(handle, target)]
            if w_inpaint and vac.numel():
                e = e + w_inpaint * s_hat(fg[:, vac], fr[:, vac]).mean()
            e_edit = e_edit + e / (n * len(patches))
        if outside.numel():
            e_cons = e_cons + attract(w_content, s_hat(fr[:, outside], fg[:, outside]).mean()) / n
    return e_edit, e_cons


def remove_energy(gen: Feats, ref: Feats, *, region: torch.Tensor, other: torch.Tensor, inpaint_ref: torch.Tensor,
                  w_content: float, w_contrast: float, w_inpaint: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Object removal: (E_edit, E_cons). The move energy's vacated-area terms without a destination.

    E_edit (applied inside the object) = contrast (the area stops looking like the object, repel)
    + inpaint (its mean feature looks like the mean of `inpaint_ref`, the surroundings or a chosen
    reference region); E_cons holds the cells outside. Stages are averaged.
    """
    n = len(gen)
    e_edit = gen[0].new_zeros(())
    e_cons = gen[0].new_zeros(())
    for fg, fr in zip(gen, ref):
        if w_contrast:
            e_edit = e_edit + w_contrast * s_hat(fg[:, region], fr[:, region]).mean() / n
        if w_inpaint:
            g_mean = fg[:, region].mean(dim=1, keepdim=True)
            r_mean = fr[:, inpaint_ref].mean(dim=1, keepdim=True)
            e_edit = e_edit + attract(w_inpaint, s_hat(g_mean, r_mean).mean()) / n
        if other.numel():
            e_cons = e_cons + attract(w_content, s_hat(fr[:, other], fg[:, other]).mean()) / n
    return e_edit, e_cons


def appearance_energy(gen: Feats, ref: Feats, ref2: Feats, *, obj: torch.Tensor, ref_obj: torch.Tensor,
                      other: torch.Tensor, w_edit: float, w_content: float, centre: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Appearance replacement: (E_edit, E_cons), summed over stages (as the official code).

    E_edit matches only the mean feature of the base object to the mean feature of the reference
    object (a global term), so the base object keeps its shape and takes the reference's look;
    E_cons holds the base image outside the object pixel by pixel. ref: base image's guidance
    branch, ref2: the reference image's. With `centre` (opt-in) the edit term compares `centred` features.
    """
    e_edit = gen[0].new_zeros(())
    e_cons = gen[0].new_zeros(())
    cf = centred if centre else (lambda f: f)
    for fg, fr, fr2 in zip(gen, ref, ref2):
        g_mean = cf(fg)[:, obj].mean(dim=1, keepdim=True)
        r_mean = cf(fr2)[:, ref_obj].mean(dim=1, keepdim=True)
        e_edit = e_edit + attract(w_edit, s_hat(g_mean, r_mean).mean())
        if other.numel():
            e_cons = e_cons + attract(w_content, s_hat(fr[:, other], fg[:, other]).mean())
    return e_edit, e_cons


def paste_energy(gen: Feats, ref: Feats, ref2: Feats, *, target: torch.Tensor, source: torch.Tensor,
                 other: torch.Tensor, w_edit: float, w_content: float, centre: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Object pasting: (E_edit, E_cons), summed over stages. Like appearance, but the edit term is
    pixel-wise: each target cell of the base image looks like its source cell of the reference
    (with `centre`, opt-in: `centred` features of each image)."""
    e_edit = gen[0].new_zeros(())
    e_cons = gen[0].new_zeros(())
    cf = centred if centre else (lambda f: f)
    for fg, fr, fr2 in zip(gen, ref, ref2):
        e_edit = e_edit + attract(w_edit, s_hat(cf(fg)[:, target], cf(fr2)[:, source]).mean())
        if other.numel():
            e_cons = e_cons + attract(w_content, s_hat(fr[:, other], fg[:, other]).mean())
    return e_edit, e_cons


def landmark_energy(gen: Feats, ref: Feats, *, patches: list[tuple[torch.Tensor, torch.Tensor]],
                    outside: torch.Tensor, w_edit: float, w_content: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Landmark drag (the official face mode, any points): (E_edit, E_cons), averaged over stages and
    pairs. Each target patch should look like its source patch of the original. E_cons (off by
    default, as in the official code) holds the cells far from every point."""
    n = len(gen)
    e_edit = gen[0].new_zeros(())
    e_cons = gen[0].new_zeros(())
    for fg, fr in zip(gen, ref):
        for handle, target in patches:
            e_edit = e_edit + attract(w_edit, s_hat(fg[:, target], fr[:, handle]).mean()) / (n * len(patches))
        if w_content and outside.numel():
            e_cons = e_cons + attract(w_content, s_hat(fr[:, outside], fg[:, outside]).mean()) / n
    return e_edit, e_cons
