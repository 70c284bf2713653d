"""The pack inside a real ComfyUI (opt-in): node listing, every API workflow, error messages.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout (the folder with main.py). The
server runs with COMFYUI_PYTHON (default: a venv next to or inside that folder, else this
interpreter), on the CPU, listening on 127.0.0.1 only. Nothing in the checkout is changed:
the pack is linked into a temporary custom_nodes folder and tiny models are written to a
temporary models folder, both handed to ComfyUI through an extra_model_paths.yaml.

    COMFYUI_PATH=$COMFY_HOME/ComfyUI python -m pytest -q tests/nodes/test_comfy_host.py

(with ../shared/comfyhost's setup.sh layout, the venv at $COMFY_HOME/venv is found by itself.)
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="set COMFYUI_PATH to a ComfyUI checkout to run the pack in it")

from helpers.node_fixtures import extra_model_paths_yaml, write_tiny_models  # noqa: E402
from helpers.workflow_tools import REPO, WORKFLOW_NAMES, core_definitions, load_json  # noqa: E402

PACK_FOLDER = "ComfyUI-ZipAR"
START_TIMEOUT = float(os.environ.get("COMFYHOST_START_TIMEOUT", 300))
RUN_TIMEOUT = float(os.environ.get("COMFYHOST_TIMEOUT", 600))
# Output size of each workflow with the tiny models (384 px grids of 24, t2i 512 px).
EXPECTED_IMAGES = {
    "llamagen_c2i_zipar": [(384, 384)],
    "llamagen_c2i_ntp_vs_zipar": [(384 * 2 + 8, 384)],
    "llamagen_c2i_window_sweep": [(384 * 5 + 8 * 4, 384)],
    "llamagen_t2i_zipar": [(512, 512)],
    "demo_zipar": [(64, 64 * 2 + 8)] * 4,  # batch 4, NTP above ZipAR
    "demo_speculative": [(64 * 3 + 8 * 2, 64)],  # NTP | ZipAR 12 | ZipAR 12 + speculative
    "janus_pro_zipar": [(48, 48)],  # 24x24 codes; the tiny VQ draws 2 px per code (the real one 16)
    "janus_pro_ntp_vs_zipar": [(48 * 2 + 8, 48)],
    "emu3_gen_zipar": [(120 * 8, 68 * 8)],  # 16:9 at 720 x 720 pixels of area: 68 x 120 tokens
    "lumina_mgpt_768_zipar": [(768, 768)],  # 48x48 tokens, 16 px each (the tiny VQGAN has the release's downsampling)
    "lumina_mgpt_ntp_vs_zipar": [(768 * 2 + 8, 768)],
    "lumina_mgpt2_zipar": [(768 * 2 + 8, 768)],
    "simplear_1024_zipar": [(1024 * 2 + 8, 1024)],  # 64x64 codes of 16 px (the tiny Cosmos has the release's compression)  # 96x96 codes of 8 px (the tiny MoVQGAN has the release's downsampling)
}


def comfy_python() -> str:
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    root = Path(COMFYUI_PATH)
    for candidate in (root.parent / "venv", root / "venv", root / ".venv"):
        if (candidate / "bin" / "python").exists():
            return str(candidate / "bin" / "python")
    return sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "comfyui.log"
        self.proc = None

    def start(self, yaml_path: Path) -> None:
        for sub in ("output", "temp", "user"):
            (self.root / sub).mkdir(exist_ok=True)
        args = [comfy_python(), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--output-directory", str(self.root / "output"),
                "--temp-directory", str(self.root / "temp"), "--user-directory", str(self.root / "user"),
                "--extra-model-paths-config", str(yaml_path),
                "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_FOLDER]
        if "--database-url" in Path(COMFYUI_PATH, "comfy", "cli_args.py").read_text():
            args += ["--database-url", f"sqlite:///{self.root / 'comfyui.db'}"]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=COMFYUI_PATH, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the server's own process group (start_new_session)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            body = r.read()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path: str, data: dict):
        req = urllib.request.Request(self.url + path, json.dumps(data).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')}") from None

    def run(self, prompt: dict) -> dict:
        """Queue an API-format prompt; the /history entry once it succeeded or failed."""
        prompt_id = self.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})["prompt_id"]
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.25)
        self.post("/interrupt", {})
        raise AssertionError(f"prompt did not finish within {RUN_TIMEOUT} s:\n{self.log_tail()}")

    def image(self, ref: dict):
        from PIL import Image

        query = urllib.parse.urlencode({k: ref[k] for k in ("filename", "subfolder", "type")})
        return Image.open(BytesIO(self.get(f"/view?{query}")))


def has_transformers() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfyhost")
    models = write_tiny_models(root / "models", t5=has_transformers(), chat=has_transformers(),
                               lumina2=has_transformers(), simplear=has_transformers())
    custom_nodes = root / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    yaml_path = root / "extra_model_paths.yaml"
    yaml_path.write_text(extra_model_paths_yaml(models, custom_nodes))
    srv = Server(root)
    try:
        srv.start(yaml_path)
        yield srv
    finally:
        srv.stop()


def error_of(entry: dict) -> str:
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_type')}: {data.get('exception_message')}"
    return ""


def test_every_node_is_listed_without_import_failure(server):
    import nodes

    info = server.get("/object_info")
    for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
        assert name in info, f"{name} missing from /object_info:\n{server.log_tail()}"
        assert info[name]["python_module"] == f"custom_nodes.{PACK_FOLDER}"
        assert info[name]["display_name"] == nodes.NODE_DISPLAY_NAME_MAPPINGS[name]
        assert info[name]["output"] == list(cls.RETURN_TYPES) and info[name]["category"] == "ZipAR"
    log = server.log_path.read_text(errors="replace")
    assert not [line for line in log.splitlines() if "IMPORT FAILED" in line and PACK_FOLDER in line]
    ar = info["ZipARLoadARModel"]["input"]["required"]["ar_model"]
    vq = info["ZipARLoadVQ"]["input"]["required"]["vq_model"]
    assert "c2i_L_384.pt" in ar[0] and "vq_ds16_c2i.pt" in vq[0]  # models/zipar through extra_model_paths.yaml
    assert "vq_ds16_c2i.pt" not in ar[0] and "c2i_L_384.pt" not in vq[0]  # each loader lists what it reads
    assert ar[1]["default"] in ar[0] and vq[1]["default"] in vq[0]
    for name, recorded in core_definitions().items():  # the core nodes the workflows rely on
        assert name in info, f"core node {name} is missing from this ComfyUI"
        assert info[name]["input"] == recorded["input"] and info[name]["output"] == recorded["output"], name


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_api_workflow_runs(server, name):
    if name.startswith(("llamagen_t2i", "janus", "emu3")) and not has_transformers():
        pytest.skip("the tiny flan-t5 folder needs transformers to be written")
    prompt = load_json(REPO / "workflows" / "api" / f"{name}.json")
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", f"{error_of(entry)}\n{server.log_tail()}"
    sizes, reports = [], []
    for node_id, out in entry["outputs"].items():
        for ref in out.get("images", []):
            image = server.image(ref)
            sizes.append(image.size)
            pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
            assert image.mode == "RGB" and len(np.unique(pixels, axis=0)) > 10  # not blank
        reports += out.get("text", [])
    assert sizes == EXPECTED_IMAGES[name]
    samplers = [n for n in prompt.values() if n["class_type"] == "ZipARSampler"]
    assert len(reports) == len(samplers) and all("forward passes" in r for r in reports)


def test_engine_errors_reach_the_user_as_one_message(server):
    prompt = load_json(REPO / "workflows" / "api" / "llamagen_c2i_zipar.json")
    sampler = next(n for n in prompt.values() if n["class_type"] == "ZipARSampler")
    sampler["inputs"]["window"] = 30  # within the widget's range, wider than the 24-token grid
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "error"
    message = error_of(entry)
    assert "ZipARSampler" in message and "window must be between 1 and 24 (got 30)" in message


# ---------------------------------------------------------------------------- memory under ComfyUI's manager

def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def c2i_prompt(seed: int, ar_model: str = "c2i_L_384.pt", image_size: int = 0, window: int = 8) -> dict:
    prompt = load_json(REPO / "workflows" / "api" / "llamagen_c2i_zipar.json")
    loader = next(n for n in prompt.values() if n["class_type"] == "ZipARLoadARModel")
    sampler = next(n for n in prompt.values() if n["class_type"] == "ZipARSampler")
    loader["inputs"].update(ar_model=ar_model, image_size=image_size)
    sampler["inputs"].update(seed=seed, window=window)
    return prompt


def test_comfyuis_own_patcher_loads_and_streams_our_models(server):
    script = REPO / "tests" / "helpers" / "comfy_patcher_check.py"
    done = subprocess.run([comfy_python(), str(script), COMFYUI_PATH, str(REPO), str(server.root / "models")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["patcher"] == "comfy.model_patcher.ModelPatcher" and got["vq_patcher"] == "ModelPatcher"
    assert got["comfy_linears"] > 0 and got["plain_linears"] == 0
    assert got["castable"] == got["leaves_with_weights"]  # every layer with weights can stay in system memory
    assert got["loaded_by_comfy"] == ["Held", "Held"]  # the VQ and the AR model, in ComfyUI's loaded list
    assert not got["slot_after_unload"]  # unloading dropped our own reference
    assert got["steps_dropped_on_load"]  # weights moved onto the device: compiled steps are rebuilt
    assert got["low_vram"] and got["streaming"] == got["castable"] == got["fp8_streaming"]
    assert got["same_tokens_streamed"] and got["fp8_same_tokens_streamed"]


def test_the_gpu_suites_comfyui_entry_runs_in_this_comfyui_without_the_server(tmp_path):
    """bench.in_comfyui (the GPU suite's ComfyUI entry) on the CPU with ComfyUI's real modules, both from
    the checkout and from the Python-only copy --prepare makes for the GPU machine: the nodes draw the
    API's tokens, and streamed (low-VRAM) tokens equal the eager API's."""
    from bench import gpu_carry

    copy = tmp_path / "ComfyUI"
    assert gpu_carry.prepare(Path(COMFYUI_PATH), copy) == 0  # no import the GPU image lacks
    # the copy with the compiled step (inductor's CPU build, a minute or two): ComfyUI asks for the loaded
    # model again on every run, which must not rebuild the steps
    for tree, compile_mode in ((COMFYUI_PATH, "auto"), (str(copy), "on")):
        out = tmp_path / "in_comfyui.json"
        done = subprocess.run([comfy_python(), "-m", "bench.in_comfyui", "--comfyui", tree, "--smoke", "--device", "cpu",
                               "--repeats", "2", "--compile", compile_mode, "--json", str(out)], cwd=REPO,
                              capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr[-3000:]
        got = json.loads(out.read_text())
        assert got["node_tokens_equal_api"] and got["api_compiled_equals_eager"]
        assert got["lowvram_streamed"] and not got["node_streamed"] and got["lowvram_tokens_equal_eager_api"]
        assert got["loaded_by_comfyui"] == ["Held", "Held"] and got["loaded_after_unload"] == 0
        assert got["image_shape"] == [1, 384, 384, 3] and got["passes"] == 224
        assert got["node_compiled"] == (compile_mode == "on") and got["node_steps_rebuilt_after_first_call"] == 0


def test_free_releases_the_model_and_the_next_run_reloads_it(server):
    from helpers.tiny_gpt import make_tiny_gpt, save_official_gpt

    name = "c2i_big_64.pt"  # ~600 MB of fp32 weights: far above the server's RSS noise
    path = server.root / "models" / "zipar" / name
    if not path.exists():
        save_official_gpt(make_tiny_gpt("c2i", seed=9, dim=1024, n_layer=12, n_head=16, n_kv_head=16,
                                        ffn_hidden=2816, num_classes=1000), path)
    size = path.stat().st_size
    requests = lambda: server.log_path.read_text(errors="replace").count("Requested to load Held")  # noqa: E731
    reads = lambda: server.log_path.read_text(errors="replace").count(f"ZipAR: read {path} from disk")  # noqa: E731

    def run(seed: int) -> None:
        entry = server.run(c2i_prompt(seed, name, image_size=64, window=2))
        assert entry["status"]["status_str"] == "success", f"{error_of(entry)}\n{server.log_tail()}"

    run(101)
    loaded = requests()
    run(102)
    assert requests() == loaded  # still loaded: ComfyUI asked for nothing new
    server.post("/free", {"unload_models": True})
    time.sleep(3)  # the flags are read by the worker between prompts
    run(103)
    assert requests() == loaded + 2  # unloaded by ComfyUI, so both models were loaded again
    held = rss_bytes(server.proc.pid)
    server.post("/free", {"unload_models": True, "free_memory": True})
    deadline, freed = time.monotonic() + 30, held
    while time.monotonic() < deadline and freed > held - size // 2:
        time.sleep(0.5)
        freed = rss_bytes(server.proc.pid)
    assert freed < held - size // 2, f"RSS {held / 1e6:.0f} MB -> {freed / 1e6:.0f} MB after POST /free ({size / 1e6:.0f} MB model)"
    read = reads()
    run(104)
    assert reads() == read + 1  # nothing kept it: the loader read the file again
    again = rss_bytes(server.proc.pid)
    print(f"model {size / 1e6:.0f} MB; server RSS {held / 1e6:.0f} MB loaded, {freed / 1e6:.0f} MB after POST /free, "
          f"{again / 1e6:.0f} MB after the next run")
    assert again > freed + size // 2


def test_twenty_runs_do_not_grow_the_server(server):
    after = []
    for seed in range(20):
        entry = server.run(c2i_prompt(1000 + seed))
        assert entry["status"]["status_str"] == "success", f"{error_of(entry)}\n{server.log_tail()}"
        after.append(rss_bytes(server.proc.pid))
    print("server RSS after each run (MB):", [round(a / 1e6) for a in after])
    assert after[19] <= after[1] * 1.05, [round(a / 1e6) for a in after]


# ---------------------------------------------------------------------------- what the artist sees (browser)

PAGE_CHECK = REPO / "tests" / "helpers" / "page_check.mjs"


def browser_env() -> dict | None:
    """node, chromium and playwright-core, as ../shared/comfyhost's setup.sh (COMFYHOST_WITH_BROWSER=1) installs them."""
    import shutil

    core = os.environ.get("PLAYWRIGHT_CORE_DIR") or str(Path(os.environ.get("COMFY_HOME", Path(COMFYUI_PATH).parent))
                                                       / "node" / "node_modules" / "playwright-core")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not (shutil.which("node") and chromium and Path(core).is_dir()):
        return None
    return {**os.environ, "PLAYWRIGHT_CORE_DIR": core, "CHROMIUM": chromium}


def page_check(server, workflow: Path, png: Path, *extra: str) -> dict:
    env = browser_env()
    if env is None:
        pytest.skip("needs node, chromium and playwright-core (comfyhost setup.sh with COMFYHOST_WITH_BROWSER=1)")
    done = subprocess.run(["node", str(PAGE_CHECK), str(workflow), str(png), *extra], env={**env, "COMFYUI_URL": server.url},
                          capture_output=True, text=True, timeout=RUN_TIMEOUT + 180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_the_page_runs_each_workflow_with_its_previews_unobstructed(server, name, tmp_path):
    """Loaded and run in the real page; after the run (previews shown, nodes at their real sizes)
    no node box overlaps another, and every sampler shows its preview. Screenshots go to
    $PAGE_CHECK_SCREENSHOTS (the docs' are made this way) or a temporary folder."""
    if name.startswith(("llamagen_t2i", "janus", "emu3")) and not has_transformers():
        pytest.skip("the tiny flan-t5 folder needs transformers to be written")
    shots = Path(os.environ.get("PAGE_CHECK_SCREENSHOTS") or tmp_path)
    ui = load_json(REPO / "workflows" / f"{name}.json")
    for node in ui["nodes"]:  # a seed of its own: ComfyUI would not rerun a sampler another workflow ran already
        if node["type"] == "ZipARSampler":
            node["widgets_values"][1] = 1 + WORKFLOW_NAMES.index(name)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(ui))
    got = page_check(server, path, shots / f"{name}.png")
    samplers = [n for n in got["nodes"] if n["type"] == "ZipARSampler"]
    assert samplers and all(n["images"] > 0 for n in samplers), "a sampler shows no preview after the run"
    assert all(n["size"][1] > 400 for n in samplers)  # the preview grew the node, as measured
    boxes = {n["id"]: (n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in got["nodes"]}
    titles = {n["id"]: n["title"] for n in got["nodes"]}
    for a in boxes:
        for b in boxes:
            if a < b:
                x0, y0, x1, y1 = boxes[a]
                u0, v0, u1, v1 = boxes[b]
                assert not (x0 < u1 and u0 < x1 and y0 < v1 and v0 < y1), f"{titles[a]} overlaps {titles[b]}"
    assert [g["title"] for g in got["groups"]][:2] == ["Models", "ZipAR"]


def test_a_missing_model_file_is_named_with_its_download_before_run(server, tmp_path):
    ui = load_json(REPO / "workflows" / "llamagen_c2i_zipar.json")
    loader = next(n for n in ui["nodes"] if n["type"] == "ZipARLoadARModel")
    url = "https://huggingface.co/FoundationVision/LlamaGen/resolve/main/c2i_L_256.pt"
    loader["widgets_values"][0] = "c2i_L_256.pt"  # as on an install without that file
    loader["properties"]["models"] = [{"name": "c2i_L_256.pt", "url": url, "directory": "zipar"}]
    path = tmp_path / "missing.json"
    path.write_text(json.dumps(ui))
    dialog = page_check(server, path, tmp_path / "missing.png", "--load-only")["dialog"]
    assert "Missing Models" in dialog and "zipar / c2i_L_256.pt" in dialog


def test_the_template_list_has_each_workflow_once_with_a_thumbnail(server):
    listed = server.get("/workflow_templates")
    assert sorted(listed[PACK_FOLDER]) == sorted(WORKFLOW_NAMES)  # once each: no second folder scanned
    for name in WORKFLOW_NAMES:
        thumb = server.get(f"/api/workflow_templates/{PACK_FOLDER}/{name}.jpg")
        assert thumb[:3] == b"\xff\xd8\xff", f"{name}.jpg is not served"
