#!/usr/bin/env python3
"""Draws the teaching figures of docs/dpo.md and docs/autograd.md as SVG.

    python3 -m venv /work/venv-docs
    /work/venv-docs/bin/pip install matplotlib==3.9.2
    /work/venv-docs/bin/python docs/img/make_figures.py      # from the repository root

writes docs/img/{pair_losses,prefix_sharing_mask,tape_sweep,dpo_worked_step}.svg
and prints the worked DPO step that docs/dpo.md quotes. Only matplotlib
(3.9.2, with the numpy it pulls in) is needed; SVG output is made
reproducible by a fixed hash salt and no embedded date.

Before drawing, the pair losses written out below are checked against the
losses and gradients that TRL 1.16 computed on the same log-probs
(tests/golden/trl_losses/*.json, the files the Rust loss tests compare with),
so the curves are the code's losses, not a retyping of the formulas. The
worked step's gradient is also checked against central differences.
"""

import json
import math
import os
import sys

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "docs", "img")
plt.rcParams["svg.hashsalt"] = "dpo-rs"
plt.rcParams["font.size"] = 10


def ls(x):
    """logsigmoid, stable: min(x, 0) - log1p(exp(-|x|))."""
    return min(x, 0.0) - math.log1p(math.exp(-abs(x)))


def s(x):
    """sigmoid, evaluated by sign so that exp never overflows."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


# Per-pair losses of the scaled margin z = beta d, as crates/dpo/src/loss/margin.rs
# defines them; each returns (loss, dloss/dz). eps: --label-smoothing.
def sigmoid_loss(z, eps=0.0):
    return -(1 - eps) * ls(z) - eps * ls(-z), -(1 - eps) * s(-z) + eps * s(z)


def hinge_loss(z):
    return (1 - z, -1.0) if z < 1 else (0.0, 0.0)


def robust_loss(z, eps):
    k = 1 - 2 * eps
    return ((1 - eps) * -ls(z) + eps * ls(-z)) / k, (-(1 - eps) * s(-z) - eps * s(z)) / k


def exo_pair_loss(z, eps):
    loss = s(z) * (ls(z) - math.log(1 - eps)) + s(-z) * (ls(-z) - math.log(eps))
    return loss, s(z) * s(-z) * (z - math.log((1 - eps) / eps))


def discopop_loss(z, tau):
    m = s(z / tau)
    dm = s(z / tau) * s(-z / tau) / tau
    loss = -ls(z) * (1 - m) + math.exp(-z) * m
    return loss, -s(-z) * (1 - m) + ls(z) * dm - math.exp(-z) * m + math.exp(-z) * dm


def ipo_loss(z, beta):
    """IPO of a pair with one scored token per side (d' = d = z / beta)."""
    gap = z / beta - 1 / (2 * beta)
    return gap * gap, 2 * gap / beta


def check_against_trl():
    """The losses above against TRL's recorded loss and gradient (mean over the batch)."""
    golden = os.path.join(ROOT, "tests", "golden", "trl_losses")
    cases = {
        "sigmoid.json": lambda z, c: sigmoid_loss(z),
        "sigmoid_beta0.5.json": lambda z, c: sigmoid_loss(z),
        "hinge.json": lambda z, c: hinge_loss(z),
        "robust_ls0.1.json": lambda z, c: robust_loss(z, c["label_smoothing"]),
        "exo_pair_ls0.001.json": lambda z, c: exo_pair_loss(z, c["label_smoothing"]),
        "exo_pair_ls0.2.json": lambda z, c: exo_pair_loss(z, c["label_smoothing"]),
        "discopop.json": lambda z, c: discopop_loss(z, c["discopop_tau"]),
        "discopop_tau0.5.json": lambda z, c: discopop_loss(z, c["discopop_tau"]),
    }
    for name, loss_of in cases.items():
        case = json.load(open(os.path.join(golden, name)))
        c, x, want = case["config"], case["inputs"], case["expected"]
        beta, batch = c["beta"], len(x["policy_chosen"])
        total, grads = 0.0, []
        for pc, pr, rc, rr in zip(x["policy_chosen"], x["policy_rejected"], x["ref_chosen"], x["ref_rejected"]):
            loss, dz = loss_of(beta * ((pc - rc) - (pr - rr)), c)
            total += loss / batch
            grads.append(beta * dz / batch)  # dL/dpi_c of the batch mean; dL/dpi_r is its negative
        assert math.isclose(total, want["loss"], rel_tol=1e-9), (name, total, want["loss"])
        for g, gc, gr in zip(grads, want["grad_policy_chosen"], want["grad_policy_rejected"]):
            assert math.isclose(g, gc, rel_tol=1e-7, abs_tol=1e-14), (name, g, gc)
            assert math.isclose(-g, gr, rel_tol=1e-7, abs_tol=1e-14), (name, -g, gr)
    # IPO is a function of the per-token margin: check it with the files' token counts.
    case = json.load(open(os.path.join(golden, "ipo.json")))
    x, beta = case["inputs"], case["config"]["beta"]
    batch = len(x["policy_chosen"])
    total = 0.0
    for pc, pr, rc, rr, nc, nr in zip(x["policy_chosen"], x["policy_rejected"], x["ref_chosen"],
                                      x["ref_rejected"], x["n_chosen"], x["n_rejected"]):
        dtok = (pc - rc) / nc - (pr - rr) / nr
        total += ipo_loss(beta * dtok, beta)[0] / batch
    assert math.isclose(total, case["expected"]["loss"], rel_tol=1e-9), ("ipo", total)
    return len(cases) + 1


def fig_pair_losses():
    zs = [-4 + 8 * i / 800 for i in range(801)]
    curves = [
        ("sigmoid (DPO)", lambda z: sigmoid_loss(z), "C0", "-"),
        ("sigmoid, eps = 0.1 (cDPO)", lambda z: sigmoid_loss(z, 0.1), "C0", "--"),
        ("robust, eps = 0.1", lambda z: robust_loss(z, 0.1), "C1", "-"),
        ("hinge", hinge_loss, "C2", "-"),
        ("ipo, beta = 1, one token a side", lambda z: ipo_loss(z, 1.0), "C3", "-"),
        ("exo_pair, eps = 0.1", lambda z: exo_pair_loss(z, 0.1), "C4", "-"),
        ("discopop, tau = 0.05", lambda z: discopop_loss(z, 0.05), "C5", "-"),
    ]
    fig, (ax_l, ax_g) = plt.subplots(1, 2, figsize=(11, 4.4))
    for label, f, color, style in curves:
        vals = [f(z) for z in zs]
        ax_l.plot(zs, [v[0] for v in vals], color=color, linestyle=style, label=label)
        ax_g.plot(zs, [v[1] for v in vals], color=color, linestyle=style, label=label)
    ax_l.set_ylim(-0.3, 4.5)
    ax_g.set_ylim(-2.2, 1.2)
    for ax in (ax_l, ax_g):
        ax.axhline(0, color="0.6", linewidth=0.8)
        ax.axvline(0, color="0.6", linewidth=0.8)
        ax.set_xlabel("z = beta d  (scaled margin: > 0 when the pair is ranked right)")
        ax.grid(alpha=0.3)
    ax_l.set_title("per-pair loss L(z)")
    ax_g.set_title("dL/dz   (dL/dpi_c = beta dL/dz = -dL/dpi_r)")
    ax_l.legend(fontsize=8, loc="upper right")
    ax_g.annotate("DPO keeps pushing right-ranked pairs,\nmore gently the further right they are",
                  xy=(2.5, -s(-2.5)), xytext=(0.3, -1.6), fontsize=8,
                  arrowprops=dict(arrowstyle="->", color="0.3"))
    for zero, text, at in ((0.5, "ipo: dL/dz = 0 at z = 1/2", (0.9, 0.75)),
                           (math.log(0.9 / 0.1), "cDPO: dL/dz = 0 at z = log((1-eps)/eps) = 2.2", (0.9, 0.45))):
        ax_g.annotate(text, xy=(zero, 0), xytext=at, fontsize=8,
                      arrowprops=dict(arrowstyle="->", color="0.3"))
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "pair_losses.svg"), metadata={"Date": None})
    plt.close(fig)


def fig_prefix_mask():
    """The attention mask of one shared row: P = 3 prompt, C = 2 chosen, R = 3 rejected tokens."""
    P, C, R = 3, 2, 3
    labels = [f"p{i}" for i in range(P)] + [f"c{i}" for i in range(C)] + [f"r{i}" for i in range(R)]
    positions = list(range(P)) + list(range(P, P + C)) + list(range(P, P + R))
    T = P + C + R

    def sees(i, j):
        return j <= i and not (i >= P + C and P <= j < P + C)

    fig, ax = plt.subplots(figsize=(6.4, 6.2))
    colors = {"p": "#9ecae1", "c": "#a1d99b", "r": "#fdae6b"}
    for i in range(T):
        for j in range(T):
            if sees(i, j):
                face = colors[labels[j][0]]
            elif j <= i:
                face = "#de2d26"  # causal would allow it; the key gap hides it
            else:
                face = "white"
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=face, edgecolor="0.5", linewidth=0.6))
            if face == "#de2d26":
                ax.text(j + 0.5, i + 0.5, "x", ha="center", va="center", color="white", fontsize=13)
    ax.set_xlim(0, T)
    ax.set_ylim(T, 0)
    ax.set_aspect("equal")
    ax.set_xticks([k + 0.5 for k in range(T)])
    ax.set_xticklabels(labels)
    ax.set_yticks([k + 0.5 for k in range(T)])
    ax.set_yticklabels([f"{lab}  (pos {p})" for lab, p in zip(labels, positions)])
    ax.xaxis.tick_top()
    ax.set_xlabel("key j (the token attended to)")
    ax.xaxis.set_label_position("top")
    ax.set_ylabel("query i (the token attending), with its position id")
    for edge in (P, P + C):
        ax.axvline(edge, color="black", linewidth=1.5)
        ax.axhline(edge, color="black", linewidth=1.5)
    ax.set_title("[prompt | chosen | rejected] in one row: filled = visible;\n"
                 "red x = the key gap (P..P+C hidden from rejected queries)", fontsize=9, pad=34)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "prefix_sharing_mask.svg"), metadata={"Date": None})
    plt.close(fig)


def fig_tape_sweep():
    """The worked example of docs/autograd.md section 1, its tape and its reverse sweep."""
    x = [[1.0, -2.0], [0.5, 3.0]]
    w = [0.1, 0.2]
    h = [[math.tanh(v) for v in row] for row in x]
    dw = [h[0][k] + h[1][k] for k in range(2)]
    dh = [[w[k] for k in range(2)] for _ in range(2)]
    dx = [[dh[r][k] * (1 - h[r][k] ** 2) for k in range(2)] for r in range(2)]

    def fmt(m):
        if isinstance(m[0], list):
            return "[" + "; ".join(" ".join(f"{v:.3f}" for v in row) for row in m) + "]"
        return "[" + " ".join(f"{v:.3f}" for v in m) + "]"

    nodes = [  # (what the forward pushed, its shape, what the sweep does at this node)
        ("0  x = leaf", "(2,2)", f"leaf: keeps\ndx = {fmt(dx[0])}\n       {fmt(dx[1])}"),
        ("1  w = leaf", "(2)", f"leaf: keeps\ndw = {fmt(dw)}"),
        ("2  h = tanh(x)", "(2,2)", "take dh\ndx += dh * (1 - h^2)"),
        ("3  s = h * w", "(2,2)", "take ds\ndh += ds * w\ndw += sum_rows(ds * h)"),
        ("4  loss = sum_all(s)", "()", "grads[4] = 1\nds += ones(2,2)"),
    ]
    fig, ax = plt.subplots(figsize=(11, 4.4))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 4.8)
    ax.axis("off")
    xs = [0.3 + 2.15 * k for k in range(5)]
    for k, (name, shape, grad) in enumerate(nodes):
        ax.add_patch(Rectangle((xs[k], 2.9), 1.9, 0.9, facecolor="#deebf7", edgecolor="0.3"))
        ax.text(xs[k] + 0.95, 3.45, name, ha="center", va="center", fontsize=9)
        ax.text(xs[k] + 0.95, 3.1, shape, ha="center", va="center", fontsize=8, color="0.35")
        ax.add_patch(Rectangle((xs[k], 0.55), 1.9, 1.25, facecolor="#fee6ce", edgecolor="0.3"))
        ax.text(xs[k] + 0.95, 1.17, grad, ha="center", va="center", fontsize=7.5, family="monospace")
    for src, dst, rad in [(0, 2, -0.35), (1, 3, -0.35), (2, 3, 0.0), (3, 4, 0.0)]:
        if rad == 0.0:
            start, end = (xs[src] + 1.9, 3.35), (xs[dst], 3.35)
        else:
            start, end = (xs[src] + 0.95 + 0.3 * src, 3.8), (xs[dst] + 0.65 + 0.3 * src, 3.8)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="->", mutation_scale=12, color="#3182bd",
                                     connectionstyle=f"arc3,rad={rad}"))
    ax.text(5.5, 4.6, "forward: each op pushes one node, in the order it runs (it can only read smaller indices)",
            ha="center", fontsize=9, color="#3182bd")
    ax.add_patch(FancyArrowPatch((10.4, 2.45), (0.6, 2.45), arrowstyle="->", mutation_scale=14,
                                 color="#e6550d", linewidth=1.5))
    ax.text(5.5, 2.12, "backward: i = 4, 3, 2, 1, 0: take grads[i] out of the store, run node i's closure, "
            "add (+=) into its inputs' slots", ha="center", fontsize=9, color="#e6550d")
    ax.text(5.5, 0.2, "w = [0.1 0.2] is broadcast over the 2 rows of x, so dw[k] = tanh(x[0][k]) + tanh(x[1][k]): "
            "one contribution per use, added", ha="center", fontsize=8.5)
    fig.savefig(os.path.join(OUT, "tape_sweep.svg"), metadata={"Date": None})
    plt.close(fig)
    return dw, dx


# The worked DPO step: two pairs, beta 0.1, the sigmoid loss (docs/dpo.md section 3).
BETA = 0.1
PAIRS = [  # (pi_c, ref_c, pi_r, ref_r): summed log-probs of the responses
    (-12.0, -13.0, -15.0, -14.5),
    (-20.0, -18.0, -16.0, -17.0),
]


def batch_loss(pairs):
    return sum(sigmoid_loss(BETA * ((pc - rc) - (pr - rr)))[0] for pc, rc, pr, rr in pairs) / len(pairs)


def worked_step():
    rows, B = [], len(PAIRS)
    for pc, rc, pr, rr in PAIRS:
        a, b = pc - rc, pr - rr
        d = a - b
        z = BETA * d
        loss, dz = sigmoid_loss(z)
        rows.append(dict(a=a, b=b, d=d, z=z, loss=loss, s_neg=s(-z),
                         g_c=BETA * dz / B, g_r=-BETA * dz / B))
    mean_loss = sum(r["loss"] for r in rows) / B
    # Central differences on the batch loss, one log-prob at a time.
    h = 1e-6
    for k, r in enumerate(rows):
        for slot, key in ((0, "g_c"), (2, "g_r")):
            up = [list(p) for p in PAIRS]
            dn = [list(p) for p in PAIRS]
            up[k][slot] += h
            dn[k][slot] -= h
            fd = (batch_loss(up) - batch_loss(dn)) / (2 * h)
            assert abs(fd - r[key]) < 1e-9, (k, key, fd, r[key])
    return rows, mean_loss


def print_worked_step(rows, mean_loss):
    print(f"worked DPO step, beta = {BETA}, B = {len(rows)} pairs (sigmoid loss):")
    print("| pair | pi_c | ref_c | pi_r | ref_r | a = pi_c - ref_c | b = pi_r - ref_r | d = a - b | "
          "z = beta d | loss -ls(z) | s(-z) | dL/dpi_c = -beta s(-z) / B | dL/dpi_r |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k, ((pc, rc, pr, rr), r) in enumerate(zip(PAIRS, rows)):
        print(f"| {k + 1} | {pc:g} | {rc:g} | {pr:g} | {rr:g} | {r['a']:+g} | {r['b']:+g} | {r['d']:+g} | "
              f"{r['z']:+.2f} | {r['loss']:.4f} | {r['s_neg']:.4f} | {r['g_c']:+.5f} | {r['g_r']:+.5f} |")
    print(f"batch loss (mean of the pairs) = {mean_loss:.4f}")


def fig_worked_step(rows, mean_loss):
    fig, ax = plt.subplots(figsize=(10.5, 2.4))
    ax.axis("off")
    head = ["pair", "pi_c", "ref_c", "pi_r", "ref_r", "a", "b", "d = a-b", "z = beta d",
            "loss = -ls(z)", "s(-z)", "dL/dpi_c", "dL/dpi_r"]
    body = []
    for k, ((pc, rc, pr, rr), r) in enumerate(zip(PAIRS, rows)):
        body.append([str(k + 1), f"{pc:g}", f"{rc:g}", f"{pr:g}", f"{rr:g}", f"{r['a']:+g}", f"{r['b']:+g}",
                     f"{r['d']:+g}", f"{r['z']:+.2f}", f"{r['loss']:.4f}", f"{r['s_neg']:.4f}",
                     f"{r['g_c']:+.5f}", f"{r['g_r']:+.5f}"])
    body.append(["mean", "", "", "", "", "", "", "", "", f"{mean_loss:.4f}", "", "", ""])
    table = ax.table(cellText=body, colLabels=head, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8.5)
    table.scale(1, 1.6)
    ax.set_title(f"One DPO step on B = {len(rows)} pairs, beta = {BETA}: a = pi_c - ref_c, b = pi_r - ref_r;\n"
                 "dL/dpi_c = -beta s(-z) / B, dL/dpi_r = +beta s(-z) / B (the tape takes it from here)",
                 fontsize=9)
    ax.text(0.5, -0.02, "pair 1 is ranked right (z > 0) and gets a smaller push than pair 2, "
            "which is ranked wrong (z < 0)", ha="center", transform=ax.transAxes, fontsize=8.5)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "dpo_worked_step.svg"), metadata={"Date": None})
    plt.close(fig)


def main():
    n = check_against_trl()
    print(f"pair losses agree with TRL's recorded values ({n} golden files)", file=sys.stderr)
    fig_pair_losses()
    fig_prefix_mask()
    dw, dx = fig_tape_sweep()
    assert abs(dw[0] - (math.tanh(1.0) + math.tanh(0.5))) < 1e-12  # the assert of docs/autograd.md
    rows, mean_loss = worked_step()
    fig_worked_step(rows, mean_loss)
    print_worked_step(rows, mean_loss)


if __name__ == "__main__":
    main()
