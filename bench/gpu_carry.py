"""What travels to a lent GPU machine for the GPU suite, and the checks that it will import there.

The device tool sends the working tree and the paths a call names in ``carry`` (64 MiB in all) to a
machine that cannot reach a package index; its Python holds torch and a fixed list of packages.
The suite's ComfyUI entry needs ComfyUI's own modules, so ``prepare`` copies the Python files they
are made of into ``.gpu/ComfyUI`` (git-ignored), and ``missing_modules`` follows their imports, and
the pack's, to name anything the machine's image would lack: found here, not in the minutes there.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GPU_DIR = REPO / ".gpu"  # what travels with the working tree (carry: [".gpu"]); ignored by git
COMFYUI_TREE = GPU_DIR / "ComfyUI"
CARRY_LIMIT = 64 * 2**20  # the device tool's limit on what travels (working tree + carried paths)
# What the ComfyUI entry needs from a ComfyUI tree: the modules the pack imports (comfy.model_management,
# model_patcher, ops, utils, patcher_extension, folder_paths) and what they import in turn.
COMFYUI_PARTS = ("comfy", "folder_paths.py", "node_helpers.py", "comfyui_version.py")
# Packages the GPU machines' image holds (the device library's KINDS.md, read 2026-11-17), as import names
IMAGE_MODULES = {
    "torch", "torchvision", "torchaudio", "triton", "numpy", "safetensors", "PIL", "psutil", "einops", "tqdm",
    "yaml", "scipy", "transformers", "tokenizers", "sentencepiece", "huggingface_hub", "requests", "aiohttp",
    "yarl", "packaging", "typing_extensions", "filelock", "jinja2", "sympy", "networkx", "fsspec", "regex",
    "cv2", "skimage", "sklearn", "pandas", "matplotlib", "pytest", "cuda", "cupy", "jax", "numba", "setuptools",
}


def comfyui_source_files(source: Path) -> dict[str, bytes]:
    """The Python files of the parts of a ComfyUI checkout to carry (a folder, or a git directory such as
    the one ``fetch`` returns; its data files, tokenizers and configs, are not needed to import them)."""
    files: dict[str, bytes] = {}
    if (source / "comfy").is_dir():
        for part in COMFYUI_PARTS:
            path = source / part
            paths = [path] if path.is_file() else sorted(path.rglob("*.py")) if path.is_dir() else []
            for p in paths:
                if "__pycache__" not in p.parts:
                    files[p.relative_to(source).as_posix()] = p.read_bytes()
        return files
    git = ["git", f"--git-dir={source}"]
    listing = subprocess.run(git + ["ls-tree", "-r", "HEAD", *COMFYUI_PARTS], capture_output=True, text=True, check=False)
    if listing.returncode or not listing.stdout.strip():
        raise SystemExit(f"--comfyui-source {source}: neither a ComfyUI checkout (no comfy/ folder) nor a git "
                         f"directory holding one ({listing.stderr.strip()[:200]})")
    for line in listing.stdout.splitlines():
        meta, name = line.split("\t", 1)
        if name.endswith(".py"):
            files[name] = subprocess.run(git + ["cat-file", "blob", meta.split()[2]], capture_output=True,
                                         check=True).stdout
    return files


def prepare(source: Path, target: Path = COMFYUI_TREE) -> int:
    """Copy the ComfyUI parts into ``.gpu/ComfyUI`` (replacing an older copy) and report their imports."""
    files = comfyui_source_files(source)
    if target.exists():
        shutil.rmtree(target)
    for name, data in files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if target == COMFYUI_TREE:  # the folder stays out of commits even where .gitignore is not ours
        (GPU_DIR / ".gitignore").write_text("*\n")
    size = sum(len(d) for d in files.values())
    print(f"copied {len(files)} files ({size / 2**20:.1f} MiB) of {source} into {target}")
    missing = missing_modules(target)
    print("imports the GPU image lacks: " + (", ".join(missing) if missing else "none"))
    return 1 if missing else 0


def module_level_imports(path: Path, package: str | None) -> set[str]:
    """Modules a file imports unconditionally (outside functions, try blocks and ifs), by full name;
    ``package``: the file's package, for relative imports (None: leave those out)."""
    try:
        tree = ast.parse(path.read_bytes())
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and package is None:
                continue
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                base = ".".join([*parent, *([base] if base else [])])
            names |= {base} | {f"{base}.{a.name}" for a in node.names}  # a name may be a submodule
    return names


def _module_file(tree: Path, name: str) -> Path | None:
    path = tree.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


ENTRY_MODULES = ("comfy.model_management", "comfy.model_patcher", "comfy.ops", "comfy.utils", "comfy.patcher_extension",
                 "folder_paths")


def missing_modules(tree: Path) -> list[str]:
    """Outside modules that importing the entry's ComfyUI modules and the pack needs (followed through the
    carried files, unconditional imports only) that neither the standard library nor the GPU image has."""
    outside: set[str] = set()
    stack = list(ENTRY_MODULES)
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        parts = name.split(".")
        stack += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b runs a/__init__.py
        path = _module_file(tree, name)
        if path is None:
            if not (tree / parts[0]).exists() and not (tree / f"{parts[0]}.py").exists():
                outside.add(parts[0])
            continue
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        stack += sorted(module_level_imports(path, package))
    for path in [*(REPO / "zipar").rglob("*.py"), *(REPO / "nodes").rglob("*.py"), *(REPO / "bench").rglob("*.py")]:
        outside |= {n.split(".")[0] for n in module_level_imports(path, None)}
    local = {"zipar", "nodes", "bench", "comfy", "folder_paths"}
    return sorted(n for n in outside if n and n not in sys.stdlib_module_names and n not in local
                  and n not in IMAGE_MODULES)


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def working_tree_bytes() -> int:
    """What the device tool sends besides carried paths: tracked and untracked files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=False).stdout
    return sum((REPO / n).stat().st_size for n in out.decode().split("\0") if n and (REPO / n).is_file())
