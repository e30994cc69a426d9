"""The documentation as a reader meets it: every relative link resolves, the front page's
at-a-glance verdicts agree with the committed results, and the results page holds the generated
blocks exactly as the chain would write them from the committed results."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
RESULTS_PAGE = RESULTS / "README.md"
PAGES = [ROOT / "README.md", RESULTS_PAGE, *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
VERDICTS = ("held", "did not hold", "inconclusive")


def unfenced(text: str) -> str:
    """``text`` without its fenced code blocks."""
    kept, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return "\n".join(kept)


def prose(text: str) -> str:
    """``text`` without code: fenced blocks and inline spans (their brackets are not links)."""
    return CODE_SPAN.sub("", unfenced(text))


def links(text: str) -> list[str]:
    """The targets of the Markdown links and images of ``text`` (outside code)."""
    return LINK.findall(prose(text))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group()[1:-1], heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(line.lstrip("#")) for line in unfenced(page.read_text()).splitlines()
            if re.match(r"#{1,6} ", line)}


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file (or heading anchor) does not exist."""
    broken = []
    for target in links(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):          # http:, https:, mailto: ...
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target} (no heading #{fragment})")
    return broken


def test_the_front_page_links_to_the_depth():
    targets = {t.partition("#")[0] for t in links((ROOT / "README.md").read_text())}
    for name in ("SETTINGS", "OPERATIONS", "GPU", "BENCHMARKS", "THEORY", "FIDELITY", "FAULTS"):
        assert f"docs/{name}.md" in targets, name
    assert "results/README.md" in targets


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == [], f"broken links in {page.relative_to(ROOT)}"


def test_the_link_check_finds_a_broken_link_and_a_missing_heading(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [gone](missing.md) ![img](gone.png) "
                    "[head](there.md#a-heading) [nohead](there.md#b-heading) "
                    "[self](#top) `[code](not-a-link.md)` [web](https://example.org)\n\n"
                    "# Top\n\n```\n[fenced](not-a-link-either.md)\n```\n")
    assert broken_links(page) == ["missing.md (no such file)", "gone.png (no such file)",
                                  "there.md#b-heading (no heading #b-heading)"]


def test_front_page_stays_short():
    """Issue 21: the README is a front page; the depth is in docs/ and results/README.md."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


# ---------------------------------------------------------------------------------------------
# The README's at-a-glance verdicts against the committed results
# ---------------------------------------------------------------------------------------------


def glance_table() -> tuple[list[str], list[list[str]]]:
    """The header cells and rows of the first table under the README's 'Results at a glance'."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Results at a glance", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            for line in section.splitlines() if line.startswith("|")]
    assert len(rows) > 2, "no table under 'Results at a glance' in README.md"
    return rows[0], rows[2:]


def verdict(cell: str) -> str:
    """The verdict word of a glance cell: 'did not hold (one seed, ...)' -> 'did not hold'."""
    return cell.split(" (")[0].strip()


def column(header: list[str], folder: str) -> int:
    hits = [i for i, cell in enumerate(header) if f"results/{folder}/" in cell]
    assert len(hits) == 1, f"the glance table needs one column naming results/{folder}/"
    return hits[0]


@pytest.mark.parametrize("folder", ["cpu", "mini"])
def test_glance_verdicts_match_the_committed_claims(folder):
    claims = json.loads((RESULTS / folder / "seeds.json").read_text())["claims"]
    header, rows = glance_table()
    col = column(header, folder)
    paper_rows = [r for r in rows if re.match(r"(Table|Figure) \d", r[0])]
    assert len(paper_rows) == len(claims), "one glance row per claim of seeds.json"
    for claim in claims:
        key = claim["claim"].split(":")[0] + ":"                     # 'Table 1:'
        row = [r for r in paper_rows if r[0].startswith(key)]
        assert len(row) == 1, f"no glance row for {key}"
        assert claim["verdict"] in VERDICTS
        assert verdict(row[0][col]) == claim["verdict"], (
            f"README says {row[0][col]!r} for {key} in results/{folder}; seeds.json says "
            f"{claim['verdict']!r}")


@pytest.mark.parametrize("folder", ["cpu", "mini"])
def test_glance_margins_above_the_pixels_match_the_committed_baselines(folder):
    """The glance row 'Encoders above their pixels' gives, for SupCon and SINCERE, the linear-probe
    top-1 and the margin over the best raw-pixel number that results/<folder>/baselines.json
    holds, to the printed precision."""
    rows = {r["kind"]: r for r in json.loads(
        (RESULTS / folder / "baselines.json").read_text())["rows"]}
    header, table = glance_table()
    row = [r for r in table if r[0].startswith("Encoders above their pixels")]
    assert len(row) == 1, "no 'Encoders above their pixels' row in the glance table"
    cell = row[0][column(header, folder)]
    expected = "; ".join(f"{name} {100 * rows[kind]['top1']:.1f}% "
                         f"({100 * rows[kind]['above_best_pixels']:+.1f})"
                         for kind, name in (("supcon", "SupCon"), ("sincere", "SINCERE")))
    assert cell.startswith(expected), f"README says {cell!r}; baselines.json gives {expected!r}"


@pytest.mark.parametrize("row_start, other", [
    ("Hard negatives (Jiang et al.): H-SCL (β = 1) above SCL", "SCL"),
    ("Hard negatives: H-SCL (β = 1) above H-UCL", "H-UCL")])
def test_glance_hard_negative_verdicts_match_the_committed_claims(row_start, other):
    """The glance rows of Jiang et al.'s accuracy claims read each form's verdict of "H-SCL
    outperforms SCL" and "... H-UCL" from results/hard-negatives/seeds.json (the CPU setting's
    experiment)."""
    claims = json.loads((RESULTS / "hard-negatives" / "seeds.json").read_text())["claims"]
    headline = {c["form"]: c["verdict"] for c in claims if c["claim"].endswith(
        f"outperforms {other} in linear-probe top-1")}
    assert set(headline) == {"sincere", "jiang"}
    header, rows = glance_table()
    row = [r for r in rows if r[0].startswith(row_start)]
    assert len(row) == 1, f"no {row_start!r} row in the glance table"
    cell = row[0][column(header, "cpu")]
    expected = f"{headline['sincere']} in SINCERE's form, {headline['jiang']} in Jiang et al.'s"
    assert cell.startswith(expected), f"README says {cell!r}; seeds.json gives {expected!r}"


# ---------------------------------------------------------------------------------------------
# The results page's generated blocks
# ---------------------------------------------------------------------------------------------


def page_block(start: str, end: str) -> str:
    text = RESULTS_PAGE.read_text()
    assert start in text and end in text, f"results/README.md lacks {start} ... {end}"
    return start + text.split(start, 1)[1].split(end, 1)[0] + end


@pytest.mark.parametrize("folder", ["cpu", "mini"])
def test_results_page_block_is_what_the_chain_writes(folder):
    """The block as `scripts/reproduce.py --update-readme` writes it from the committed results
    into results/README.md (links relative to results/)."""
    from sincere.analysis import blocks
    from sincere.analysis.formatting import link

    out = RESULTS / folder
    summary = json.loads((out / "seeds.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    by_seed = {seed: {} for seed in summary["seeds"]}
    start, end = blocks.readme_markers(folder)
    lines = blocks.seeds_readme_block(out, by_seed, timings, link(out, RESULTS_PAGE))
    assert page_block(start, end) == "\n".join([start, ""] + lines + ["", end])


def test_results_page_hard_negative_block_is_what_the_chain_writes():
    from sincere.analysis import blocks
    from sincere.analysis.formatting import link

    out = RESULTS / "hard-negatives"
    timings = json.loads((out / "timings.json").read_text())
    n_seeds = len(json.loads((out / "seeds.json").read_text())["seeds"])
    lines = blocks.hard_negatives_block(out, n_seeds, timings, link(out, RESULTS_PAGE))
    assert (page_block(blocks.HN_START, blocks.HN_END)
            == "\n".join([blocks.HN_START, ""] + lines + ["", blocks.HN_END]))
