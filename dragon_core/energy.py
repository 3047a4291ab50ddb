"""DragonDiffusion's feature-correspondence energies.

Features are lists of [C, N] maps on the feature grid (one per decoder stage). "Attract" terms are
w / (1 + 4 S) of a mean similarity S (the paper's 1/(alpha + beta S) with alpha=1, beta=4); "repel"
terms are w * S. s_hat = (1 + cos) / 2.
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


def centred(f: torch.Tensor) -> torch.Tensor:
    """Features relative to their image's mean feature, for terms that compare two different images.

    Deliberate deviation: the official cross-image terms compare raw features, which carry a large
    image-wide component (the scene's overall look). Matched across two images, it pulls in the
    reference image's overall look: on the toy model the pasted object took the colour of the
    reference's background (settings scenes: paste background 22.2 -> 27.8 dB, appearance 20.9 -> 29.8).
    """
    return f - f.mean(dim=1, keepdim=True)


def move_energy(gen: Feats, ref: Feats, *, target: torch.Tensor, source: torch.Tensor, other: torch.Tensor,
                vacated: torch.Tensor, inpaint_ref: torch.Tensor, w_edit: float, w_content: float,
                w_contrast: float, w_inpaint: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Object move/resize: (E_edit, E_cons).

    target: flat target cells; source: their source cells (raster-paired); other: unchanged cells;
    vacated: cells the object leaves; inpaint_ref: cells whose look the vacated area should take.
    Weights per stage as in the official code: edit, content and contrast averaged over stages,
    inpaint summed. Deliberate fix: the official edit and content terms put the raw cosine into
    w/(1 + 4 cos), which has a pole at cos = -1/4 and rewards anti-correlated features below it
    (the energy turns negative); every attract term here uses s_hat in [0, 1], so it is monotone.
    """
    n = len(gen)
    e_edit = gen[0].new_zeros(())
    e_cons = gen[0].new_zeros(())
    for fg, fr in zip(gen, ref):
        e_edit = e_edit + attract(w_edit, s_hat(fg[:, target], fr[:, source]).mean()) / n
        if other.numel():
            e_cons = e_cons + attract(w_content, s_hat(fr[:, other], fg[:, other]).mean()) / n
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
                      other: torch.Tensor, w_edit: float, w_content: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Appearance replacement: (E_edit, E_cons), summed over stages (as the official code).

    E_edit matches only the mean feature of the base object to the mean feature of the reference
    object (a global term), so the base object keeps its shape and takes the reference's look;
    E_cons holds the base image outside the object pixel by pixel. ref: base image's guidance
    branch, ref2: the reference image's. The edit term compares `centred` features.
    """
    e_edit = gen[0].new_zeros(())
    e_cons = gen[0].new_zeros(())
    for fg, fr, fr2 in zip(gen, ref, ref2):
        g_mean = centred(fg)[:, obj].mean(dim=1, keepdim=True)
        r_mean = centred(fr2)[:, ref_obj].mean(dim=1, keepdim=True)
        e_edit = e_edit + attract(w_edit, s_hat(g_mean, r_mean).mean())
        if other.numel():
            e_cons = e_cons + attract(w_content, s_hat(fr[:, other], fg[:, other]).mean())
    return e_edit, e_cons


def paste_energy(gen: Feats, ref: Feats, ref2: Feats, *, target: torch.Tensor, source: torch.Tensor,
                 other: torch.Tensor, w_edit: float, w_content: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Object pasting: (E_edit, E_cons), summed over stages. Like appearance, but the edit term is
    pixel-wise: each target cell of the base image looks like its source cell of the reference
    (`centred` features of each image)."""
    e_edit = gen[0].new_zeros(())
    e_cons = gen[0].new_zeros(())
    for fg, fr, fr2 in zip(gen, ref, ref2):
        e_edit = e_edit + attract(w_edit, s_hat(centred(fg)[:, target], centred(fr2)[:, source]).mean())
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
