"""The Airflow DAG that `kedro airflow create` writes for the default pipeline: one task per group of nodes
that share in-memory data (none today: every intermediate is in the catalog), and the task graph equals the
pipeline's node dependencies. CI has no Airflow (not a project dependency): there the generated file is
parsed; where `airflow` imports, the DAG itself is imported too."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.kedro_runs import copy_project

PIPELINE = "__default__"
DAG_FILE = "sonoseg_dag.py"  # kedro-airflow names it <package>[_<env>][_<pipeline>]_dag.py


@dataclass(frozen=True)
class TaskGraph:
    """Tasks as the Kedro node names each one runs, and edges as (upstream, downstream) task ids."""

    tasks: dict[str, frozenset[str]]
    edges: frozenset[tuple[str, str]]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, Path]:
    """(project copy, DAG file) after one `kedro airflow create` in a copy of the project."""
    root = copy_project(tmp_path_factory.mktemp("airflow") / "project")
    env = {**os.environ, "KEDRO_LOGGING_CONFIG": str(root / "conf" / "logging.yml")}
    args = [sys.executable, "-m", "kedro", "airflow", "create", "--pipelines", PIPELINE, "--group-by", "memory"]
    result = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    dag_file = root / "airflow_dags" / DAG_FILE
    assert dag_file.is_file(), f"no {DAG_FILE} in {sorted(p.name for p in (root / 'airflow_dags').iterdir())}"
    return root, dag_file


def _persisted_datasets(project: Path) -> set[str]:
    """Dataset names declared in the catalog files of the environments the DAG runs with (base, local)."""
    names: set[str] = set()
    for env in ("base", "local"):
        for path in sorted((project / "conf" / env).glob("catalog*.yml")):
            names.update(k for k in (yaml.safe_load(path.read_text()) or {}) if not k.startswith("_"))
    return names


def _default_pipeline(monkeypatch):
    """The project's registered `__default__` pipeline, without configuring Kedro for the whole test session."""
    import kedro.framework.project as kedro_project

    from sonoseg import pipeline_registry

    monkeypatch.setattr(kedro_project, "PACKAGE_NAME", "sonoseg")
    return pipeline_registry.register_pipelines()[PIPELINE]


def expected_graph(pipeline, persisted: set[str]) -> tuple[set[frozenset[str]], set[tuple[frozenset, frozenset]]]:
    """Groups of nodes that must share a task (joined by data that is not persisted, so exists only in one
    process), and the edges between groups implied by the node dependencies."""
    group = {node.name: frozenset({node.name}) for node in pipeline.nodes}
    for child, parents in pipeline.node_dependencies.items():
        for parent in parents:
            if set(parent.outputs) & set(child.inputs) - persisted:
                merged = group[parent.name] | group[child.name]
                for name in merged:
                    group[name] = merged
    edges = {
        (group[parent.name], group[child.name])
        for child, parents in pipeline.node_dependencies.items()
        for parent in parents
        if group[parent.name] != group[child.name]
    }
    return set(group.values()), edges


def _chain(expr: ast.expr) -> list[str]:
    """`tasks["a"] >> tasks["b"] >> ...` as ["a", "b", ...]; anything else fails the test."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.RShift):
        return _chain(expr.left) + _chain(expr.right)
    if isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Constant):
        return [expr.slice.value]
    raise AssertionError(f"unexpected dependency expression: {ast.unparse(expr)}")


def parse_dag_file(source: str) -> TaskGraph:
    """Tasks (from `@task(task_id=...)` functions and the node names they run) and `>>` edges of a DAG file
    written by kedro-airflow's template."""
    tree = ast.parse(source)
    tasks: dict[str, frozenset[str]] = {}
    function_task: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    for item in ast.walk(tree):
        if isinstance(item, ast.FunctionDef):
            for decorator in item.decorator_list:
                if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "task":
                    task_id = next(k.value.value for k in decorator.keywords if k.arg == "task_id")
                    calls = [c for c in ast.walk(item) if isinstance(c, ast.Call)]
                    (call,) = [c for c in calls if getattr(c.func, "id", None) == "_run_kedro_node"]
                    (names,) = [k.value for k in call.keywords if k.arg == "node_names"]
                    assert task_id not in tasks, f"task id {task_id} twice"
                    tasks[task_id] = frozenset(ast.literal_eval(names))
                    function_task[item.name] = task_id
        elif isinstance(item, ast.Assign) and [getattr(t, "id", None) for t in item.targets] == ["tasks"]:
            # the dict that instantiates each task must call the function of that very task
            for key, value in zip(item.value.keys, item.value.values, strict=True):
                assert function_task.get(value.func.id) == key.value, f"tasks[{key.value!r}] calls {value.func.id}()"
        elif isinstance(item, ast.Expr) and isinstance(item.value, ast.BinOp):
            ids = _chain(item.value)
            edges.update(zip(ids, ids[1:]))
    unknown = {t for edge in edges for t in edge} - set(tasks)
    assert not unknown, f"edges name tasks that do not exist: {unknown}"
    return TaskGraph(tasks, frozenset(edges))


def differences(graph: TaskGraph, pipeline, persisted: set[str]) -> list[str]:
    """What differs between the DAG's task graph and the pipeline's; empty when they agree."""
    groups, edges = expected_graph(pipeline, persisted)
    found_groups = set(graph.tasks.values())
    problems = [f"missing task for nodes {sorted(g)}" for g in groups - found_groups]
    problems += [f"extra task for nodes {sorted(g)}" for g in found_groups - groups]
    if len(found_groups) != len(graph.tasks):
        problems.append("two tasks run the same nodes")
    found_edges = {(graph.tasks[a], graph.tasks[b]) for a, b in graph.edges}
    problems += [f"missing edge {sorted(a)} >> {sorted(b)}" for a, b in edges - found_edges]
    problems += [f"extra edge {sorted(a)} >> {sorted(b)}" for a, b in found_edges - edges]
    return problems


def test_generated_dag_file_has_the_pipelines_task_graph(generated, monkeypatch):
    project, dag_file = generated
    source = dag_file.read_text()
    pipeline = _default_pipeline(monkeypatch)
    persisted = _persisted_datasets(project)
    graph = parse_dag_file(source)

    assert differences(graph, pipeline, persisted) == []
    assert len(graph.tasks) == len(pipeline.nodes) >= 6  # nothing in memory between nodes: one task per node
    settings = {t.targets[0].id: t.value for t in ast.parse(source).body if isinstance(t, ast.Assign)}
    assert ast.literal_eval(settings["pipeline_name"]) == PIPELINE and ast.literal_eval(settings["env"]) == "local"

    # the comparison sees a dropped edge and a task that the pipeline does not have
    first_edge = next(line for line in source.splitlines() if " >> " in line)
    without_edge = parse_dag_file(source.replace(first_edge, ""))
    assert any("missing edge" in p for p in differences(without_edge, pipeline, persisted))
    extra = (
        '    @task(task_id="extra")\n    def extra():\n        _run_kedro_node(node_names=["extra"])\n\n'
        '    tasks = {\n        "extra": extra(),'
    )
    assert differences(parse_dag_file(source.replace("    tasks = {", extra)), pipeline, persisted) == [
        "extra task for nodes ['extra']"
    ]


def test_memory_data_between_nodes_puts_them_in_one_task(generated, monkeypatch):
    """If an intermediate left the catalog, its producer and consumer would have to share a task."""
    project, _ = generated
    pipeline = _default_pipeline(monkeypatch)
    persisted = _persisted_datasets(project) - {"splits"}
    groups, _ = expected_graph(pipeline, persisted)
    (shared,) = [g for g in groups if len(g) > 1]
    assert {"split_samples", "train_model"} <= shared
    assert differences(parse_dag_file(generated[1].read_text()), pipeline, persisted)


def test_generated_dag_imports_in_airflow(generated, monkeypatch, tmp_path):
    if importlib.util.find_spec("airflow") is None:
        pytest.skip("apache-airflow is not installed (not a project dependency); the DAG file was checked by parsing")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow_home"))  # Airflow writes its config there
    project, dag_file = generated
    spec = importlib.util.spec_from_file_location("sonoseg_generated_dag", dag_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.sonoseg()  # the @dag-decorated factory that the file calls once at import

    parsed = parse_dag_file(dag_file.read_text())
    assert dag.dag_id == "sonoseg"
    assert set(dag.task_ids) == set(parsed.tasks)
    edges = {(upstream, task.task_id) for task in dag.tasks for upstream in task.upstream_task_ids}
    assert edges == parsed.edges
    imported = TaskGraph(parsed.tasks, frozenset(edges))
    assert differences(imported, _default_pipeline(monkeypatch), _persisted_datasets(project)) == []
