"""The chapter's other cells as presets: each construct on synthetic data (fast), and each preset
against the book's own code and the notebook on the real MNIST (slow)."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from bnmnist import data, network
from bnmnist.config import PRESETS
from bnmnist.errors import ConfigError
from bnmnist.graph import build_graph, set_input_statistics
from bnmnist.trainer import train

import tooling
from helpers import ROOT, assert_full_disk_said_in_one_line, chapter_epoch_0, fill_disk, run_train, tmpfs

tf1 = tf.compat.v1
CHAPTER = [p for p in tooling.NOTEBOOK_CELLS if p not in ("bn", "plain") and not PRESETS[p].reuse]


@pytest.fixture(scope="module")
def tiny_split(tiny_mnist):
    return data.split(data.load(tiny_mnist))


def _session(h):
    sess = tf1.Session(graph=h.graph)
    sess.run(h.init)
    return sess


def _batch(split, n=50):
    return split.X_train[:n], split.y_train[:n]


@pytest.mark.parametrize("preset", CHAPTER)
def test_every_chapter_preset_has_the_books_variable_names_and_one_training_op(preset):
    h = build_graph(PRESETS[preset])
    assert [v.op.name for v in h.model_variables] == network.variable_names(PRESETS[preset])
    assert h.graph.get_operation_by_name("train/training_op") is h.training_op
    assert h.graph.get_tensor_by_name("loss/loss:0") is h.loss


@pytest.mark.parametrize("preset", ["lr_schedule", "dropout", "max_norm", "max_norm_regularizer"])
def test_the_xla_loop_refuses_what_it_does_not_compute(preset):
    with pytest.raises(ConfigError, match="xla loop runs gradient descent without dropout.*--loop feed_dict"):
        PRESETS[preset].replace(loop="xla").validated()
    PRESETS[preset].validated()  # their own per-step loop


def test_max_norm_clips_every_hidden_kernel_row_after_a_step_and_leaves_the_logits_alone(tiny_split):
    for preset in ("max_norm", "max_norm_regularizer"):
        h = build_graph(PRESETS[preset])
        assert [op.name for op in h.after_step] == ["max_norm/hidden1", "max_norm/hidden2"]
        assert h.graph.get_collection("max_norm") == h.after_step
        variables = {v.op.name: v for v in h.model_variables}
        with _session(h) as sess:
            for name in ("hidden1/kernel", "hidden2/kernel", "outputs/kernel"):
                variables[name].load(sess.run(variables[name]) * 50, sess)  # rows far beyond norm 1
            X, y = _batch(tiny_split)
            sess.run(h.training_op, {h.X: X, h.y: y})
            before = sess.run(variables["outputs/kernel"])
            sess.run(h.after_step)
            for name in ("hidden1/kernel", "hidden2/kernel"):
                norms = np.linalg.norm(sess.run(variables[name]), axis=1)
                assert norms.max() <= 1.0 + 1e-6 and norms.max() > 0.99, (preset, name)
            np.testing.assert_array_equal(sess.run(variables["outputs/kernel"]), before)


@pytest.mark.parametrize("preset", ["l1", "l1_regularizer"])
def test_l1_loss_is_the_cross_entropy_plus_the_scaled_sum_of_every_kernels_absolute_values(preset, tiny_split):
    config = PRESETS[preset]
    h = build_graph(config)
    base = h.graph.get_tensor_by_name("loss/avg_xentropy:0")
    kernels = [v for v in h.model_variables if v.op.name.endswith("/kernel")]
    with _session(h) as sess:
        X, y = _batch(tiny_split)
        loss, base_loss, values = sess.run([h.loss, base, kernels], {h.X: X, h.y: y})
    penalty = config.l1_scale * sum(np.abs(k.astype(np.float64)).sum() for k in values)
    assert len(kernels) == len(config.hidden) + 1
    assert loss - base_loss == pytest.approx(penalty, rel=1e-4)


def test_learning_rate_schedule_decays_with_the_global_step(tiny_split):
    config = PRESETS["lr_schedule"]
    h = build_graph(config)
    step = next(v for v in h.graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES) if v.op.name == "train/global_step")
    rate = h.graph.get_tensor_by_name("train/ExponentialDecay:0")
    with _session(h) as sess:
        X, y = _batch(tiny_split)
        assert sess.run(rate) == np.float32(0.1)
        for _ in range(3):
            sess.run(h.training_op, {h.X: X, h.y: y})
        assert sess.run(step) == 3
        want = np.float32(0.1) * np.power(np.float32(0.1), np.float32(3) / np.float32(10000))
        assert sess.run(rate) == pytest.approx(want, rel=1e-6) and sess.run(rate) < 0.1


def test_gradient_clipping_caps_each_gradient_at_the_threshold(tiny_split):
    config = PRESETS["gradient_clipping"]
    h = build_graph(config.replace(learning_rate=1.0))
    with _session(h) as sess:
        X, y = _batch(tiny_split)
        before = sess.run(h.model_variables)
        sess.run(h.training_op, {h.X: X, h.y: y * 0 + 3})
        after = sess.run(h.model_variables)
    steps = [np.abs(a - b).max() for a, b in zip(after, before)]
    assert max(steps) <= 1.0 + 1e-6 and max(steps) > 0.5  # some gradient hit the cap


def test_standardised_inputs_are_the_cells_numpy_values_bit_for_bit(tiny_split):
    h = build_graph(PRESETS["selu"])
    scaled = h.graph.get_tensor_by_name("dnn/truediv:0")
    with _session(h) as sess:
        set_input_statistics(sess, h, tiny_split.X_train)
        got = sess.run(scaled, {h.X: tiny_split.X_valid})
    means = tiny_split.X_train.mean(axis=0, keepdims=True)
    stds = tiny_split.X_train.std(axis=0, keepdims=True) + 1e-10
    np.testing.assert_array_equal(got, (tiny_split.X_valid - means) / stds)


def test_selu_is_the_chapters_function_with_scale_and_alpha_in_their_places():
    z = np.linspace(-4, 4, 101).astype(np.float32)
    got = network.selu(tf.constant(z)).numpy()
    want = np.float32(network.SELU_SCALE) * np.where(
        z >= 0, z, np.float32(network.SELU_ALPHA) * (np.exp(z.astype(np.float64)) - 1)
    )
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert (
        pytest.approx(1.6732632423543772) == network.SELU_ALPHA
        and pytest.approx(1.0507009873554805) == network.SELU_SCALE
    )


def test_dropout_drops_about_the_rate_while_training_and_nothing_otherwise(tiny_split):
    h = build_graph(PRESETS["dropout"])
    X, _ = _batch(tiny_split, 500)
    with _session(h) as sess:
        plain = [sess.run(h.logits, {h.X: X}) for _ in range(2)]
        dropped = [sess.run(h.logits, {h.X: X, h.training: True}) for _ in range(2)]
        masks = [sess.run(h.graph.get_tensor_by_name("dnn/cond/Identity:0"), {h.X: X, h.training: True})]
    np.testing.assert_array_equal(plain[0], plain[1])
    assert not np.array_equal(dropped[0], dropped[1]) and not np.array_equal(dropped[0], plain[0])
    kept = (masks[0] != 0)[X != 0].mean()
    assert 0.45 < kept < 0.55
    np.testing.assert_array_equal(masks[0][masks[0] != 0], (X * 2)[masks[0] != 0])  # kept / keep_prob


def _tiny(preset, **changes):
    return PRESETS[preset].replace(**{"epochs": 3, "batch_size": 100, **changes})


def _variables(run_dir, config):
    import bnmnist

    with bnmnist.restore(run_dir) as model:
        return model.variables()


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["dropout", "lr_schedule"])
def test_a_resumed_chapter_run_ends_bit_identical_to_an_unbroken_one(preset, tiny_split, tmp_path):
    """Dropout's random streams, the momentum slots and the global step carry over a resume."""
    from bnmnist import runs

    config = _tiny(preset)
    whole = runs.new_run_dir(str(tmp_path / "whole"))
    train(config, tiny_split, whole, out=None)
    broken = runs.new_run_dir(str(tmp_path / "broken"))
    train(config.replace(epochs=1), tiny_split, broken, out=None)
    result = train(config, tiny_split, broken, resume=True, out=None)
    assert result.first_epoch == 1
    a, b = _variables(whole, config), _variables(broken, config)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    whole_results = json.load(open(os.path.join(whole, "results.json")))
    broken_results = json.load(open(os.path.join(broken, "results.json")))
    assert whole_results["validation_accuracy"] == broken_results["validation_accuracy"]


@pytest.mark.parametrize("loop", [[], ["--feed-dict"]])
def test_the_selu_preset_prints_no_tensorflow_warning(loop, tiny_mnist, tmp_path):
    """Loading the training set's statistics once went through a deprecated call, whose warning a
    reader takes for a fault."""
    p = run_train("--preset", "selu", *loop, "--epochs", "1", "--batch-size", "100", "--data", tiny_mnist,
                  "--logdir", tmp_path)  # fmt: skip
    assert p.returncode == 0 and "WARNING:tensorflow" not in p.stdout + p.stderr, p.stderr[-2000:]


@pytest.mark.slow
def test_selu_prints_every_fifth_epoch_with_the_last_batchs_accuracy(tiny_split, tmp_path):
    import io

    from bnmnist import runs

    out = io.StringIO()
    train(_tiny("selu", epochs=6), tiny_split, runs.new_run_dir(str(tmp_path)), out=out)
    lines = [line for line in out.getvalue().splitlines() if "Validation accuracy" in line]
    assert [line.split()[0] for line in lines] == ["0", "5"]
    assert all(re.match(r"\d+ Batch accuracy: [0-9.]+ Validation accuracy: [0-9.]+ \(", line) for line in lines)


def test_notebook_values_are_read_from_each_presets_cell(book_notebook):
    values = {p: tooling.notebook_values(book_notebook, cell) for p, (cell, _) in tooling.NOTEBOOK_CELLS.items()}
    assert values["bn"][0] == "0.8952" and values["bn"][19] == "0.9742" and len(values["bn"]) == 20
    assert values["selu"] == dict(
        zip(range(0, 40, 5), ["0.923", "0.9578", "0.9664", "0.9682", "0.9694", "0.9688", "0.9694", "0.97"])
    )
    assert values["lr_schedule"][0] == "0.959" and len(values["lr_schedule"]) == 5
    assert values["max_norm_regularizer"][1] == "0.9698"
    epochs, exact, largest = tooling.compare_with_notebook(values["l1"], ["0.831", "0.8712"])
    assert epochs == [0, 1] and exact == 1 and largest == pytest.approx(0.0002)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--presets", "bn,nope"], "unknown preset(s) nope; choose from plain, selu, bn"),
        (["--notebook", "/nonexistent/nb.ipynb"], "no notebook at /nonexistent/nb.ipynb"),
    ],
)
def test_chapter_command_refuses_bad_input_in_one_line(args, message, tiny_mnist, tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "chapter.py"),
            "--data",
            tiny_mnist,
            "--logdir",
            str(tmp_path),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, BNMNIST_REFERENCE=os.environ.get("BNMNIST_REFERENCE", "/nonexistent")),
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert (
        p.stderr.strip().startswith("chapter: error: ")
        and message in p.stderr
        and len(p.stderr.strip().splitlines()) == 1
    )


# preset -> (notebook section for notebook_cells.py, which of the section's training cells)
BOOK_CODE = {
    "selu": ("SELU", 0),
    "gradient_clipping": ("Gradient Clipping", 0),
    "lr_schedule": ("Learning Rate Scheduling", 0),
    "l1": ("ell_1", 0),
    "l1_regularizer": ("ell_1", 1),
    "dropout": ("Dropout", 0),
    "max_norm": ("Max norm", 0),
    "max_norm_regularizer": ("Max norm", 1),
}
# notebook_cells.py starts every section with the notebook's first sizes (n_hidden2=100); in the
# notebook's order the Dropout cells ran after cell 163 had set n_hidden2 = 50.
NOTEBOOK_STATE = {"Dropout": ("n_hidden2=100", "n_hidden2=50")}


@pytest.fixture(scope="module")
def book_code_first_epoch(mnist_dir, book_notebook, notebook_cells, tmp_path_factory):
    """Each section's own cells run by the reference's notebook_cells.py for one epoch, TF1's op
    seeds emulated: section -> (what it printed, the initial variables of each training cell)."""
    pytest.importorskip("tf_keras", reason="tf-keras (the dev extra) runs the book's tf.layers code")
    import concurrent.futures

    script = notebook_cells
    folder = tmp_path_factory.mktemp("book_code")

    def run(section):
        dump = str(folder / f"{section.replace(' ', '_')}.npz")
        section_script = script
        if section in NOTEBOOK_STATE:
            first, state = NOTEBOOK_STATE[section]
            source = Path(script).read_text(encoding="utf-8")
            assert source.count(first) == 1, f"notebook_cells.py no longer sets {first}"
            section_script = str(folder / f"notebook_cells_{section}.py")
            with open(section_script, "w", encoding="utf-8") as f:
                f.write(source.replace(first, state))
        p = subprocess.run(
            [sys.executable, section_script, "--section", section, "--epochs", "1", "--data", mnist_dir,
             "--selu-as-printed", "--notebook", book_notebook, "--dump-initial", dump],
            capture_output=True, text=True, timeout=900, cwd=folder, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )  # fmt: skip
        assert p.returncode == 0, p.stderr[-2000:]
        dumps = [dump] + [f"{dump}.{i}.npz" for i in range(1, 3) if os.path.exists(f"{dump}.{i}.npz")]
        return section, (p.stdout, [dict(np.load(d)) for d in dumps])

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return dict(pool.map(run, sorted({section for section, _ in BOOK_CODE.values()})))


@pytest.mark.slow
@pytest.mark.parametrize("preset", CHAPTER)
def test_initial_variables_equal_the_book_codes_under_tf1_seeds_bit_for_bit(preset, book_code_first_epoch):
    section, index = BOOK_CODE[preset]
    book = book_code_first_epoch[section][1][index]
    h = build_graph(PRESETS[preset])
    with _session(h) as sess:
        ours = dict(zip([v.op.name for v in h.model_variables], sess.run(h.model_variables)))
    shared = [name for name in ours if not name.startswith("standardize/")]
    assert shared and all(name in book for name in shared), sorted(book)
    for name in shared:
        np.testing.assert_array_equal(ours[name], book[name], err_msg=f"{preset}: {name}")


@pytest.mark.slow
@pytest.mark.parametrize("preset", CHAPTER)
def test_each_preset_prints_what_the_books_own_code_prints_at_epoch_0(
    preset, book_code_first_epoch, chapter_first_epoch
):
    """The same first value as the book's code on this machine and TensorFlow, which is the
    notebook's where float order allows (docs/chapter11.md has the full tables)."""
    section, _ = BOOK_CODE[preset]
    cell = tooling.NOTEBOOK_CELLS[preset][0]
    book = re.search(rf"^cell {cell}: 0:([0-9.]+)/", book_code_first_epoch[section][0], re.M).group(1)
    assert chapter_epoch_0(chapter_first_epoch[0], preset) == book


def test_the_measured_on_line_names_the_instruction_set_its_caps_and_whether_onednn_is_on(monkeypatch):
    from bnmnist.compile_cache import host_features

    widest = "AVX-512" if "avx512f" in host_features() else "AVX2" if "avx2" in host_features() else "AVX"
    for name in ("TF_ENABLE_ONEDNN_OPTS", "XLA_FLAGS", "ONEDNN_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    assert f" ({widest}, oneDNN on), " in tooling.measured_on()
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert f" ({widest}, XLA capped at AVX2, oneDNN capped at AVX2, oneDNN off), " in tooling.measured_on()


def test_a_markdown_section_that_does_not_fit_on_the_disk_leaves_the_file_as_it_was(tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        path = disk / "doc.md"
        tooling.write_markdown_section(str(path), "table", "the old table")
        before = path.read_text()
        fill_disk(disk)
        with pytest.raises(OSError) as e:
            tooling.write_markdown_section(str(path), "table", "a new table " * 10_000)
        assert e.value.errno == errno.ENOSPC
        assert path.read_text() == before and sorted(os.listdir(disk)) == ["doc.md", "filler"]


@pytest.mark.slow
def test_chapter_command_on_a_full_disk_says_so_in_one_line_and_leaves_its_markdown_whole(
    book_notebook, tiny_mnist, tmp_path
):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        markdown = disk / "chapter11.md"
        shutil.copy(os.path.join(ROOT, "docs", "chapter11.md"), markdown)
        before = markdown.read_text()
        fill_disk(disk)
        p = subprocess.run(
            [sys.executable, os.path.join(ROOT, "scripts", "chapter.py"), "--data", tiny_mnist, "--notebook",
             book_notebook, "--presets", "bn", "--epochs", "1", "--logdir", str(tmp_path / "logs"), "--markdown",
             str(markdown)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert_full_disk_said_in_one_line(p, "chapter: error:")
        assert markdown.read_text() == before and sorted(os.listdir(disk)) == ["chapter11.md", "filler"]


@pytest.mark.slow
def test_chapter_command_writes_each_cells_comparison_to_markdown(chapter_first_epoch):
    stdout, markdown = chapter_first_epoch
    assert markdown.startswith("<!-- chapter -->\nMeasured ")
    assert f"({tooling.instruction_set()})" in markdown.splitlines()[1]  # a reader whose digits differ sees why
    for preset in CHAPTER:
        assert f"| `{preset}` | {tooling.NOTEBOOK_CELLS[preset][0]} |" in markdown
        assert f"\n### {preset}\n" in markdown
    l1 = re.search(r"^l1 \(cell 161, .*\): (.*);", stdout, re.M).group(1)
    assert l1 == "exact"  # the hand-written l1 cell is exact on every CPU measured


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["selu", "dropout", "max_norm_regularizer"])
def test_export_restore_and_the_books_recipe_work_for_chapter_presets(preset, tiny_mnist, tiny_split, tmp_path):
    import bnmnist
    from bnmnist import runs
    from bnmnist.restored import export_saved_model

    run_dir = runs.new_run_dir(str(tmp_path / "logs"))
    train(_tiny(preset, epochs=1), tiny_split, run_dir, out=None)
    images = data.load(tiny_mnist).x_test[:200]
    exported = export_saved_model(run_dir, tmp_path / "saved_model")
    served = tf.saved_model.load(exported).signatures["serving_default"](images=tf.constant(images))
    with bnmnist.restore(run_dir) as model:
        assert served["probabilities"].numpy().tobytes() == model.predict_proba(images).tobytes()
        prefix = model.checkpoint
    graph = tf.Graph()  # the book's recipe: the training op and the cell's extra ops, by name
    with graph.as_default():
        saver = tf1.train.import_meta_graph(prefix + ".meta")
        training_op = graph.get_operation_by_name("train/training_op")
        clips = tf1.get_collection("max_norm")
        assert len(clips) == (2 if preset.startswith("max_norm") else 0)
        with tf1.Session(graph=graph) as sess:
            saver.restore(sess, prefix)
            feed = {"X:0": tiny_split.X_train[:50], "y:0": tiny_split.y_train[:50]}
            if preset == "dropout":
                feed["training:0"] = True
            before = sess.run("eval/accuracy:0", feed)
            sess.run(training_op, feed)
            sess.run(clips)
            assert 0 <= sess.run("eval/accuracy:0", feed) <= 1 and 0 <= before <= 1


def test_a_capped_chapter_run_is_written_beside_the_uncapped_values_it_is_compared_with(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import chapter

    markdown = tmp_path / "chapter11.md"
    uncapped = {"bn": ["0.8952", "0.9202"], "plain": ["0.9044", "0.9494"]}
    lines = []
    for preset, values in uncapped.items():
        lines += [f"### {preset}", "", "| epoch | notebook | bnmnist |", "| --- | --- | --- |"]
        lines += [f"| {e} | {v} | {v} |" for e, v in enumerate(values)]
    tooling.write_markdown_section(str(markdown), "chapter", "\n".join(lines))
    assert chapter.uncapped_values(str(markdown)) == uncapped

    def row(preset, printed):
        return {"preset": preset, "pairs": [(e, u, p) for e, (u, p) in enumerate(zip(uncapped[preset], printed))],
                "exact": sum(u == p for u, p in zip(uncapped[preset], printed)), "n": 2, "largest": 0.0002}  # fmt: skip

    monkeypatch.setattr(sys, "argv", ["chapter.py", "--isa", "SSE4_2"])
    args = type("Args", (), {"markdown": str(markdown), "isa": "SSE4_2"})
    chapter.write_capped_markdown(args, [row("bn", ["0.8952", "0.9202"]), row("plain", ["0.9044", "0.9496"])])
    text = markdown.read_text()
    assert "<!-- chapter -->" in text and "<!-- chapter-SSE4_2 -->" in text  # the uncapped values stay
    assert "| `bn` | 2/2 | 0.0002 | 2/2 |" in text and "| `plain` | 1/2 | 0.0002 | 1/2 |" in text
    assert "`ONEDNN_MAX_CPU_ISA=SSE41`" in text


@pytest.mark.slow
def test_notebook_run_sets_the_notebooks_own_values_beside_the_published_and_the_presets(
    mnist_dir, book_notebook, tmp_path
):
    markdown = tmp_path / "chapter11.md"
    shutil.copy(os.path.join(ROOT, "docs", "chapter11.md"), markdown)  # with the presets' table
    before = markdown.read_text()
    p = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "chapter.py"), "--notebook-run", "--epochs", "1",
         "--data", mnist_dir, "--notebook", book_notebook, "--markdown", str(markdown)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    text = markdown.read_text()
    start, end = "<!-- chapter-notebook -->", "<!-- /chapter-notebook -->"
    section = text.split(start)[1].split(end)[0]
    outside = text.split(start)[0] + text.split(end)[1]
    assert outside.strip() == re.sub(rf"{start}.*{end}\n?", "", before, flags=re.S).strip()  # the rest is kept
    assert ", 0 raised." in section and "%load_ext bnmnist.book" in section
    for preset, (cell, _) in tooling.NOTEBOOK_CELLS.items():
        assert f"#### {preset} (cell {cell}): " in section
    # bn and l1 are exact on every CPU: published, the notebook's own run and the preset agree
    assert "| 0 | 0.8952 | 0.8952 | 0.8952 |" in section and "| 0 | 0.831 | 0.831 | 0.831 |" in section
