"""A new user's mistakes - mistyped folders, unwritable paths, missing credentials - end in one
line saying what is wrong and exit 2, never a traceback and never a silently empty result."""
from jobs.cli import main
from tests.conftest import jpeg_bytes, textured


def test_report_and_evaluate_refuse_a_folder_without_results(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder in ("nothere", "empty"):
        assert main(["report", str(tmp_path / folder), "--out", str(tmp_path / "r.html")]) == 2
        assert "no zoomin results there" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
    labels = tmp_path / "l.jsonl"
    labels.write_text('{"file": "a.jpg", "label": "real"}\n')
    assert main(["evaluate", str(tmp_path / "empty"), "--labels", str(labels)]) == 2
    assert "no zoomin results there" in capsys.readouterr().err


def test_missing_and_unwritable_paths_are_one_line_errors(tmp_path, capsys):
    assert main(["train", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "w.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoomin train: error:") and "none.jsonl" in err and "Traceback" not in err


def test_object_storage_without_credentials_says_how_to_give_them(tmp_path, monkeypatch, capsys):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(textured(40, 30)))
    # Requests are signed before they are sent, so nothing needs to answer on this port.
    endpoint = ["--endpoint-url", "http://127.0.0.1:9", "--retries", "1"]
    assert main(["scan", "s3://bucket/photos/", "--out", str(tmp_path / "out"), "--backend", "fake",
                 "--no-progress", *endpoint]) == 2
    err = capsys.readouterr().err
    assert "NoCredentialsError" in err and "--anon" in err and "Traceback" not in err
    assert main(["scan", str(tmp_path / "a.jpg"), "--out", "s3://bucket/results/", "--backend", "fake",
                 "--no-progress", *endpoint]) == 2
    err = capsys.readouterr().err
    assert "NoCredentialsError" in err and "--anon" in err


def test_ctrl_c_is_a_message_and_exit_130(tmp_path, monkeypatch, capsys):
    import jobs.cli

    def interrupted(_a):
        raise KeyboardInterrupt
    monkeypatch.setattr(jobs.cli, "cmd_scan", interrupted)
    assert main(["scan", str(tmp_path), "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "the same command resumes" in err


def test_client_errors_are_explained_per_store_and_keep_no_secrets():
    from jobs.storage import StorageConfig, explain, is_client_error

    def made(module: str, name: str, text: str = "") -> Exception:
        return type(name, (Exception,), {"__module__": module})(text)
    aws = made("botocore.exceptions", "NoCredentialsError")
    gcs = made("google.auth.exceptions", "DefaultCredentialsError")
    other = made("botocore.exceptions", "EndpointConnectionError", "cannot reach http://x?X-Amz-Signature=abc123")
    assert all(is_client_error(e) for e in (aws, gcs, other))
    assert not is_client_error(ValueError("a bug"))
    assert "AWS_ACCESS_KEY_ID" in explain(aws) and "GOOGLE_APPLICATION_CREDENTIALS" in explain(gcs)
    assert "abc123" not in explain(other, StorageConfig()) and "EndpointConnectionError" in explain(other)


def test_prior_outside_zero_one_or_without_calibrated_scores_is_refused(tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(textured(40, 30)))
    out = str(tmp_path / "out")
    assert main(["scan", str(tmp_path / "a.jpg"), "--out", out, "--prior", "2", "--no-progress"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert main(["scan", str(tmp_path / "a.jpg"), "--out", out, "--prior", "0.1", "--backend", "fake",
                 "--no-progress"]) == 2
    assert "compact backend" in capsys.readouterr().err
    from zoomin_core.compact_model import CompactModel
    CompactModel.new({"version": "old"}).save(tmp_path / "old.safetensors")
    assert main(["scan", str(tmp_path / "a.jpg"), "--out", out, "--prior", "0.1", "--no-progress",
                 "--model", str(tmp_path / "old.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "calibrated on" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_train_device_that_is_not_there_is_refused_before_loading(tmp_path, capsys):
    import torch
    labels = str(tmp_path / "none.jsonl")  # never read: the device is checked first
    for device, words in (("banana", "not a device name"), ("mps", "only 'cpu' and CUDA GPUs")) + (
            () if torch.cuda.is_available() else (("cuda", "torch sees no CUDA GPU here"),)):
        assert main(["train", labels, "--out", str(tmp_path / "w.safetensors"), "--device", device]) == 2
        err = capsys.readouterr().err
        assert err.startswith("zoomin train: error: --device") and words in err and "Traceback" not in err
