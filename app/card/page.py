"""Model card: what the loaded bundles are, how they were trained and how well they did,
read from their meta.json (measured by train.py / model.evaluation.evaluate; nothing typed in here)."""
from __future__ import annotations

from functools import partial

import streamlit as st

from app.card.external import external_section, gate_section, input_path_section
from app.card.aids import aids_card
from app.card.checklist import checklist_card
from app.card.checks import baselines_block, sanity_section, stress_section
from app.card.faithfulness import faithfulness_section
from app.card.rules import heat_warning_section, rule_agreement_section
from app.meta import NOT_RECORDED, dig, num, pct, starting_weights
from app.resources import bundle_metas, models_dir, show_no_model
from model.labels import display_name, is_malignant
from model.evaluation.report import confusion_figure, history_figure, per_class_table, reliability_figure, roc_figure


def metric_grid(items: list[tuple[str, str, str]], per_row: int = 4) -> None:
    for start in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for col, (label, value, help_) in zip(cols, items[start:start + per_row]):
            col.metric(label, value, help=help_ or None)


def recipe_facts(meta: dict) -> None:
    """Training time over all epochs, hardware, and every command that shaped the bundle."""
    train_s = meta.get("train_time_s")
    st.markdown(f"Training time {num(train_s / 60, 0) + ' min (all epochs)' if isinstance(train_s, (int, float)) else NOT_RECORDED}"
                f" · last run on {meta.get('hardware', NOT_RECORDED)} ({num(meta.get('wall_time_s'), 0)} s) · "
                f"weights of epoch {meta.get('kept_epoch', meta.get('best_epoch', '?'))} of "
                f"{len(meta.get('history') or [])} (best validation score at epoch {meta.get('best_epoch', '?')}) · "
                f"torch {dig(meta, 'versions', 'torch', default='?')}")
    commands = meta.get("commands") or ([meta["command"]] if meta.get("command") else [])
    if len(commands) > 1:
        st.caption("Commands, in order (later ones resumed the run):")
    for c in commands:
        st.code(str(c), language="bash")


def melanoma_flag_section(meta: dict, test: dict) -> None:
    flag = meta.get("melanoma_flag")
    if not isinstance(flag, dict) or not isinstance(flag.get("threshold"), (int, float)):
        st.info("This classifier has no melanoma flag (`python -m model.cli.melanoma_flag BUNDLE --data DIR` adds one).")
        return
    ext = flag.get("external") if isinstance(flag.get("external"), dict) else None
    how = (f"the threshold that catches {pct(flag.get('target_sensitivity'))} of the "
           f"{flag.get('val_melanomas', '?')} validation melanomas")
    if ext and isinstance(flag.get("validation_threshold"), (int, float)) \
            and flag["threshold"] > flag["validation_threshold"]:
        how = (f"raised from {flag['validation_threshold']:.3f} ({how}) until at least "
               f"{pct(ext.get('min_specificity'))} of the other lesions of {ext.get('where', 'another clinic')} stay "
               f"unflagged: there it catches {pct(ext.get('sensitivity'))} of {ext.get('melanomas', '?')} melanomas "
               f"and leaves {pct(ext.get('specificity'))} of {ext.get('others', '?')} other lesions alone (at the "
               f"validation threshold: {pct(dig(ext, 'at_validation_threshold', 'sensitivity'))} and "
               f"{pct(dig(ext, 'at_validation_threshold', 'specificity'))}, a flag on most benign lesions from "
               "another dermatoscope, which tells a clinician little). The price is a lower sensitivity on this "
               "model's own images (below)")
    st.markdown(f"The app flags an image when the calibrated P(melanoma) is at least **{flag['threshold']:.3f}**: "
                f"{how}. A screening aid: it accepts false alarms, and it misses some melanomas.")
    metric_grid([
        ("Flag sensitivity (test)", pct(test.get("melanoma_flag_sensitivity")), "Share of test melanomas flagged."),
        ("Flag specificity (test)", pct(test.get("melanoma_flag_specificity")),
         "Share of test non-melanomas not flagged."),
        ("Flag sensitivity (validation)", pct(flag.get("val_sensitivity")), "Where the threshold was chosen."),
        ("Flag specificity (validation)", pct(flag.get("val_specificity")), ""),
    ])


def attention_section(meta: dict) -> None:
    focus = dig(meta, "interpretability", "gradcam_in_lesion", default=None)
    if not isinstance(focus, dict) or not focus:
        st.info("Not measured for this classifier (`python -m model.cli.heat_in_lesion BUNDLE --data DIR`).")
        return
    rows = [{"classifier": f"{v.get('arch', '?')} ({key}, {str(v.get('created', '?'))[:10]})",
             "mean share of Grad-CAM heat inside the lesion": pct(v.get("mean_share")),
             "median share": pct(v.get("median_share")),
             "images with under 50% inside": pct(v.get("share_of_images_under_50pct")),
             "images": v.get("n", "?")}
            for key, v in focus.items() if isinstance(v, dict)]
    any_row = next(v for v in focus.values() if isinstance(v, dict))
    st.caption(f"Grad-CAM for each image's top class at layer `{any_row.get('layer', '?')}`, against the "
               f"{any_row.get('mask', 'reference masks')}, over the {any_row.get('split', '?')} split "
               "(`python -m model.cli.heat_in_lesion`). Heat outside the mask is not always wrong (the border and the "
               "surrounding skin carry information), but a model that mostly looks elsewhere deserves suspicion.")
    st.table(rows, border="horizontal")


def curves(history: list, groups: dict[str, list[str]]) -> None:
    if not isinstance(history, list) or not history or not isinstance(history[0], dict):
        st.caption("No training log recorded.")
        return
    cols = st.columns(len(groups))
    for col, (title, keys) in zip(cols, groups.items()):
        present = [k for k in keys if any(k in h for h in history)]
        if present:
            fig = history_figure(history, present)
            fig.update_layout(title=title)
            col.plotly_chart(fig, key=f"hist_{title}")


def test_results(cls: dict, test: dict) -> None:
    """The held-out test split's figures, per-class table, confusion matrix, reliability and ROC curves."""
    st.header("Held-out test results", divider="gray")
    if not test:
        st.info("No test metrics recorded in meta.json.")
    else:
        st.caption(f"{test.get('n', '?')} test images never used for training or model selection "
                   "(lesion-disjoint split). Probabilities calibrated by temperature scaling.")
        metric_grid([
            ("Balanced accuracy", pct(test.get("balanced_accuracy")), "Mean of per-class recall."),
            ("Macro AUC", num(test.get("macro_auc")), "One-vs-rest ROC AUC averaged over classes."),
            ("Accuracy", pct(test.get("accuracy")), "Dominated by the common nevus class."),
            ("Macro F1", num(test.get("macro_f1")), ""),
            ("Melanoma sensitivity", pct(test.get("melanoma_sensitivity")), "Share of melanomas called melanoma."),
            ("Melanoma specificity", pct(test.get("melanoma_specificity")), "Share of non-melanomas not called melanoma."),
            ("ECE before calibration", num(test.get("ece_before_temperature")), "Expected calibration error."),
            ("ECE after calibration", num(test.get("ece_after_temperature")), "Lower is better calibrated."),
        ])
        rows = per_class_table(test)
        if rows:
            st.table(rows, border="horizontal")
        left, right = st.columns(2)
        if isinstance(test.get("confusion_matrix"), list):
            left.plotly_chart(confusion_figure(test["confusion_matrix"], test.get("classes", cls.get("classes", [])),
                                               title="Confusion matrix (test)"), key="card_cm")
        if isinstance(test.get("reliability"), dict):
            right.plotly_chart(reliability_figure(test["reliability"]), key="card_rel")
        roc = test.get("roc")
        if isinstance(roc, dict) and roc:
            per_class = test.get("per_class", {})
            st.plotly_chart(roc_figure({c: (v["fpr"], v["tpr"], dig(per_class, c, "auc", default=None))
                                        for c, v in roc.items() if isinstance(v, dict) and "fpr" in v and "tpr" in v}),
                            key="card_roc")


def overview_tab(cls: dict) -> None:
    """Overview, intended use, held-out test results and the melanoma flag."""
    cfg = cls.get("train_config") if isinstance(cls.get("train_config"), dict) else {}
    size = cls.get("input_size") if isinstance(cls.get("input_size"), list) else None
    test = dig(cls, "metrics", "test", default={}) or {}

    st.header("Overview", divider="gray")
    st.markdown(f"**Classifier** `{cls.get('arch', '?')}` · trained {str(cls.get('created', '?'))[:10]} · "
                f"input {f'{size[1]}×{size[0]} px' if size else '?'} · "
                f"{'ImageNet-pretrained' if cfg.get('pretrained') or cls.get('pretrained') else 'trained from scratch'} · "
                f"temperature {num(cls.get('temperature'), 2)} · weights {cls.get('weights_dtype', '?')}")
    st.markdown(f"**Starting weights:** {starting_weights(cls)}")
    st.table([{"code": c, "class": display_name(c), "malignant": "yes" if is_malignant(c) else "no"}
                  for c in cls.get("classes", [])], border="horizontal")

    st.header("Intended use and limitations", divider="gray")
    st.markdown(f"""
- **Intended use:** teaching and research on how a dermoscopy classifier behaves and where it looks.
  **Not a medical device**; not for diagnosis, triage or any decision about a patient.
- **Training data:** {sum(v for v in dig(cls, 'data', 'counts', default={}).values() if isinstance(v, int)) or '?'}
  HAM10000 images (layout `{dig(cls, 'data', 'layout', default='?')}`), mostly fair skin, collected in Austria
  (Vienna) and Australia (Queensland); skin of colour, other devices and other populations are not represented.
- **Resolution:** images are shrunk to {f'{size[1]}×{size[0]}' if size else '?'} pixels, far below what a
  dermatologist sees; fine structures (networks, dots, vessels) are largely lost.
- **Classes:** only the {len(cls.get('classes', []))} classes above; any other lesion (or a non-lesion) is forced
  into one of them. Class frequencies are very unequal (melanocytic nevi dominate).
- **Labels:** confirmed by histopathology, follow-up, expert consensus or confocal microscopy, depending on
  the image; several images can show the same lesion (the split keeps each lesion on one side).
- **Heatmaps** show what raised a class score, not why; they can highlight rulers, ink, hair or vignetting.
    """)
    BALANCING = {
        "sqrt": "square-root sampling (a class of n images drawn in proportion to √n), so its probabilities describe a "
                "population in which the classes are far closer to equally frequent than in HAM10000",
        "balanced": "class-balanced sampling, so its probabilities describe a population in which every class is "
                    "equally frequent",
        "logit-adjust": "a logit-adjusted loss (the training class frequencies added to its outputs during training "
                        "only), so its probabilities describe a population in which every class is equally frequent",
    }
    BALANCING["both"] = BALANCING["balanced"]
    if cfg.get("imbalance") in BALANCING:
        how = BALANCING[cfg["imbalance"]]
        st.markdown(f"""
- **Probabilities assume equally common classes** (or nearly so). The classifier was trained with {how}: rare
  classes (and the malignant sum) come out higher than HAM10000's own frequencies, or a clinic's, would give. Temperature
  scaling sharpens or softens them but cannot undo this shift of class frequencies
  (`python -m bench.calibration_check` measures how much of the calibration error it accounts for).
    """)

    test_results(cls, test)

    st.header("Melanoma flag", divider="gray")
    melanoma_flag_section(cls, test)


def aids_tab(cls: dict) -> None:
    """Prediction sets and similar cases."""
    st.header("Prediction sets and similar cases", divider="gray")
    aids_card(cls)


def other_devices_tab(cls: dict) -> None:
    """Other dermatoscopes, full-resolution uploads and the quality gate."""
    st.header("Other dermatoscopes, full-resolution uploads and the quality gate", divider="gray")
    external_section(cls)
    st.subheader("One input path for any resolution")
    input_path_section(cls)
    st.subheader("The quality gate")
    gate_section(cls)


def heatmaps_tab(cls: dict) -> None:
    """Where the classifier looks, and the checks on its heatmaps."""
    st.header("Where the classifier looks", divider="gray")
    attention_section(cls)
    heat_warning_section(cls)
    st.subheader("Faithfulness of the heatmaps, per method and layer")
    faithfulness_section(cls)
    baselines_block(cls)
    st.subheader("Do the heatmaps depend on what the model learned? (randomisation check)")
    sanity_section(cls)
    st.subheader("What-if stress test on known confounders")
    stress_section(cls)


def checklist_tab(cls: dict) -> None:
    """The 7-point checklist in the classifier's features."""
    st.header("The 7-point checklist in the classifier's features", divider="gray")
    checklist_card(cls)


def rules_tab(cls: dict) -> None:
    """Artefacts and dermoscopic colours."""
    st.header("Artefacts and dermoscopic colours", divider="gray")
    rule_agreement_section(cls)


def data_tab(cls: dict, seg: dict | None) -> None:
    """Data and split, training recipes and the segmenter."""
    cfg = cls.get("train_config") if isinstance(cls.get("train_config"), dict) else {}

    st.header("Data and split", divider="gray")
    counts = dig(cls, "data", "counts", default={})
    sizes = dig(cls, "data", "split_sizes", default={})
    st.markdown(f"Split: hash `{dig(cls, 'split', 'hash', default='?')}`, seed {dig(cls, 'split', 'seed', default='?')}, "
                f"lesion-disjoint and stratified by class · train {sizes.get('train', '?')} / val "
                f"{sizes.get('val', '?')} / test {sizes.get('test', '?')} images · "
                f"{dig(cls, 'data', 'skipped_unreadable', default=0)} unreadable images skipped.")
    if counts:
        st.table([{"class": display_name(k), "code": k, "images": v} for k, v in counts.items()], border="horizontal")

    st.header("Training recipe", divider="gray")
    recipe_facts(cls)
    if cfg:
        with st.expander("Full training configuration"):
            st.json(cfg)
    curves(cls.get("history"), {"Loss": ["train_loss", "val_loss"],
                                "Validation scores": ["val_balanced_accuracy", "val_accuracy"]})
    quality = cls.get("quality") if isinstance(cls.get("quality"), dict) else {}
    if quality:
        st.caption(f"Quality gate: out-of-distribution threshold {num(quality.get('ood_threshold'), 1)} "
                   f"({quality.get('ood_reference', '')}); colour threshold {num(quality.get('colour_threshold'), 1)} "
                   f"({quality.get('colour_reference', 'not recorded')}); blur threshold "
                   f"{num(quality.get('sharpness_p01'), 1)} (1st percentile of training-image sharpness).")

    st.header("Lesion segmenter", divider="gray")
    if seg is None:
        st.info("No segmenter bundle: the Analyse page shows no outline or measurements.")
    else:
        seg_test = dig(seg, "metrics", "test", default={}) or {}
        ssize = seg.get("input_size") if isinstance(seg.get("input_size"), list) else None
        st.markdown(f"`{seg.get('arch', '?')}` · input {f'{ssize[1]}×{ssize[0]} px' if ssize else '?'} · "
                    f"threshold {seg.get('threshold', '?')} · {seg_test.get('n', '?')} test images")
        st.markdown(f"**Starting weights of the encoder:** {starting_weights(seg)}")
        metric_grid([("Mean Dice", num(seg_test.get("mean_dice")), "Overlap with the reference masks."),
                     ("Mean IoU", num(seg_test.get("mean_iou")), "Intersection over union."),
                     ("Thresholded Jaccard", num(seg_test.get("thresholded_jaccard")),
                      "ISIC 2018 score: images with IoU < 0.65 count 0.")], per_row=3)
        recipe_facts(seg)
        curves(seg.get("history"), {"Segmenter loss": ["train_loss"], "Validation Dice": ["val_dice"]})


st.title("Model card")
st.caption("Every figure on this page is read from the bundles' meta.json, as measured when they were "
           "trained and evaluated.")
cls, seg, error = bundle_metas()
if error:
    st.error(error)
if cls is None:
    show_no_model(models_dir())
    st.stop()


# One tab at a time: a tab's sections run and are drawn only while it is open (st.tabs with
# on_change="rerun"), so opening the card costs its first tab, not all of its tables and charts
# (docs/page-latency.md).
TABS = {"Overview and test results": partial(overview_tab, cls),
        "Prediction sets and similar cases": partial(aids_tab, cls),
        "Other dermatoscopes and the gate": partial(other_devices_tab, cls), "Heatmaps": partial(heatmaps_tab, cls),
        "7-point checklist": partial(checklist_tab, cls), "Artefacts and colours": partial(rules_tab, cls),
        "Data and training": partial(data_tab, cls, seg)}
TAB_KEY = "card_tab"
for draw, tab in zip(TABS.values(), st.tabs(list(TABS), key=TAB_KEY, on_change="rerun")):
    if tab.open:
        with tab:
            draw()
