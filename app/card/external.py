"""Model card section: other dermatoscopes (an external set's figures), the input path (full-resolution
photographs against their 200x150 twins) and the quality gate, read from meta.json
(`metrics.external`, `input_path`, `quality.gate`), each with the command that measured it."""
from __future__ import annotations

import streamlit as st

from app.meta import NOT_RECORDED, num, pct

DERM7PT_CREDIT = ("Derm7pt: Kawahara, Daneshvar, Argenziano & Hamarneh, *Seven-point checklist and skin lesion "
                  "classification using multitask multimodal neural nets*, IEEE JBHI 23(2), 2019 (images CC BY-NC-ND "
                  "4.0; evaluated, never trained on).")


def external_rows(rep: dict) -> list[dict]:
    """The headline rows of one external set (pure: tested without Streamlit)."""
    g, s = rep.get("gate", {}), rep.get("sets", {})
    return [
        {"measure": "images (with a HAM10000 class)", "value": str(rep.get("n", NOT_RECORDED))},
        {"measure": f"balanced accuracy over its classes ({', '.join(rep.get('classes_present', []))})",
         "value": num(rep.get("balanced_accuracy"))},
        {"measure": "melanoma AUC", "value": num(rep.get("melanoma_auc"))},
        {"measure": "melanoma as the top class: sensitivity", "value": num(rep.get("melanoma_top_class_sensitivity"))},
        {"measure": "melanoma flag: sensitivity / specificity",
         "value": f"{num(rep.get('melanoma_flag_sensitivity'))} / {num(rep.get('melanoma_flag_specificity'))}"},
        {"measure": f"prediction sets at {s.get('coverage_level', '?')}%: coverage / mean size",
         "value": f"{num(s.get('coverage'))} / {num(s.get('mean_set_size'), 2)}"},
        {"measure": "quality gate: images flagged", "value": f"{g.get('flagged', NOT_RECORDED)} ({pct(g.get('flag_rate'))})"},
        {"measure": "error rate of flagged / passed images",
         "value": f"{pct(g.get('error_rate_flagged'))} / {pct(g.get('error_rate_passed'))}"},
    ]


def input_path_rows(table: dict, classes: list[str]) -> list[dict]:
    out = []
    for name, r in table.items():
        out.append({"input path": name, "top class agrees": f"{r['top_class_agrees']} of {r['n']}",
                    "largest median |Δp|": num(max(r["abs_dp_median"].values())),
                    "largest max |Δp|": num(max(r["abs_dp_max"].values()), 2),
                    "gated full-res / twin": f"{r['gated_full']} / {r['gated_twin']}"})
    return out


def external_section(meta: dict) -> None:
    ext = (meta.get("metrics") or {}).get("external") or {}
    if not ext:
        st.info("Not measured on another clinic's images yet (`python -m model.cli.evaluate BUNDLE --data "
                "DERM7PT_DIR --record`).")
    for name, rep in ext.items():
        st.markdown(f"**{name}** — the `{rep.get('part', '?')}` images of `{rep.get('data', '?')}`, through the "
                    "app's own path (input path, gate, flag, sets):")
        st.table(external_rows(rep), border="horizontal")
        st.caption(f"Measured with `{rep.get('command', NOT_RECORDED)}`. {DERM7PT_CREDIT}")


def input_path_section(meta: dict) -> None:
    ip = meta.get("input_path")
    if not isinstance(ip, dict) or not ip.get("pairs"):
        st.info("The input path has not been compared on full-resolution pairs "
                "(`python -m model.cli.input_paths BUNDLE --fullres DIR --twins DIR --record`).")
        return
    st.markdown(f"Every upload goes through one input path; this bundle uses **{ip.get('used') or 'its own'}**. "
                "Each row runs the same full-resolution photographs and their 200x150 twins (the pipeline the "
                "training images came through) through one candidate path:")
    st.table(input_path_rows(ip["pairs"], meta.get("classes", [])), border="horizontal")
    st.caption(f"Measured with `{ip.get('command', NOT_RECORDED)}`.")


def gate_section(meta: dict) -> None:
    g = (meta.get("quality") or {}).get("gate")
    if not isinstance(g, dict):
        st.info("The gate's thresholds come from training (`python -m model.cli.gate` measures and resets them).")
        return
    rows = [{"set": "validation (thresholds chosen here)", "flagged": pct(g.get("val_flag_rate"))},
            {"set": "test split (false alarms)", "flagged": f"{g['test']['flagged']} of {g['test']['n']} "
                                                           f"({pct(g['test']['rate'])})"}]
    for key, label in (("fullres", "full-resolution uploads"), ("not_dermoscopy", "images that are not dermoscopy")):
        if key in g:
            rows.append({"set": label, "flagged": f"{g[key]['flagged']} of {g[key]['n']} ({pct(g[key]['rate'])})"})
    if "external" in g:
        e = g["external"]
        rows.append({"set": f"another dermatoscope ({e.get('part', '?')} images)",
                     "flagged": f"{e['flagged']} of {e['n']}; wrong when flagged {pct(e.get('error_rate_flagged'))}, "
                                f"when passed {pct(e.get('error_rate_passed'))}"})
    st.markdown(f"Each check's threshold sits at one common tail of the validation images, chosen so that all "
                f"checks together flag at most {pct(g.get('budget'))} of them.")
    st.table(rows, border="horizontal")
    st.caption(f"Measured with `{g.get('command', NOT_RECORDED)}`.")
