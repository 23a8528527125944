"""``boxbus schemas``: the contract's gate — check, release, register, list, codegen."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from boxbus.cli.context import endpoints, settings_from_env
from boxbus.cli.output import console, print_json
from bus import codegen, naming
from bus.catalog import SchemaCatalog
from bus.compat import Problem, check
from bus.errors import ConfigError
from bus.registry import Compatibility, SchemaRegistry
from bus.releases import check_catalog, release, released_versions
from bus.topics import list_topics

app = typer.Typer(help="The Avro contract: check compatibility, release, register, list.",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for programs.")]


def _problem_json(p: Problem) -> dict[str, Any]:
    return {"version": p.version, "direction": p.direction, "location": p.location,
            "message": p.message, "fix": p.hint}


@app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """The event types of the contract, their files and released versions."""
    settings = settings_from_env()
    catalog = SchemaCatalog.load(settings.schemas_dir)
    rows: list[dict[str, Any]] = [
        {"type": e.fullname,
         "file": str(e.path.relative_to(settings.schemas_dir)) if e.path else "",
         "fields": len(e.schema["fields"]),
         "released_versions": len(released_versions(e.fullname, settings.schemas_dir))}
        for e in catalog]
    if json_out:
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} event types in {settings.schemas_dir}",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("type", "file", "fields", "released"):
        table.add_column(column, justify="right" if column in ("fields", "released") else "left")
    for r in rows:
        table.add_row(r["type"], r["file"], str(r["fields"]), str(r["released_versions"]))
    console.print(table)


@app.command("check")
def check_(
    registry: Annotated[bool, typer.Option(
        "--registry", help="Also compare with every version registered on the registry.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Is every schema compatible (BACKWARD_TRANSITIVE) with every released version? Exits 1
    and explains each problem if not."""
    settings = settings_from_env()
    catalog = SchemaCatalog.load(settings.schemas_dir)
    results: dict[str, list[Problem]] = {
        v.event.fullname: v.problems for v in check_catalog(catalog, settings.schemas_dir)}
    if registry:
        for name, problems in asyncio.run(_registry_problems(settings, catalog)).items():
            results[name] = results.get(name, []) + problems
    broken = {name: problems for name, problems in results.items() if problems}
    if json_out:
        print_json({"compatible": not broken, "types": len(results),
                    "problems": {n: [_problem_json(p) for p in ps] for n, ps in broken.items()}})
    elif broken:
        for name, problems in broken.items():
            console.print(f"[red]incompatible[/] {name}")
            for problem in problems:
                console.print(f"  {problem}", highlight=False)
        console.print(f"{len(broken)} of {len(results)} event types would break readers of "
                      "released events")
    else:
        console.print(f"[green]compatible[/]: all {len(results)} event types read every "
                      "released version")
    if broken:
        raise typer.Exit(1)


async def _registry_problems(settings: Any, catalog: SchemaCatalog) -> dict[str, list[Problem]]:
    registry = SchemaRegistry(endpoints(settings).registry_url)
    found: dict[str, list[Problem]] = {}
    for subject in await registry.subjects():
        name = subject.rsplit("-", 1)[-1]
        if name in catalog:
            versions = await registry.versions(subject)
            found.setdefault(name, []).extend(check(catalog[name].schema, versions))
    return found


@app.command("release")
def release_(json_out: JsonOpt = False) -> None:
    """Record the schemas that changed as new released versions (after the check)."""
    settings = settings_from_env()
    written = release(SchemaCatalog.load(settings.schemas_dir), settings.schemas_dir)
    if json_out:
        print_json({"released": written})
    else:
        for path in written:
            console.print(f"released {path}")
        if not written:
            console.print("nothing changed since the last release")


@app.command("register")
def register(
    region: Annotated[list[str] | None, typer.Option(
        help="Register for this region's topic (repeatable).")] = None,
    topic: Annotated[list[str] | None, typer.Option(
        help="Register for this topic (repeatable).")] = None,
    ahead: Annotated[bool, typer.Option(
        "--ahead", help="Register for topics that do not exist yet.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Register every event schema for the given topics (subjects <topic>-<type>), with
    BACKWARD_TRANSITIVE compatibility set on each subject."""
    settings = settings_from_env()
    topics = [*(topic or []),
              *(naming.region_topic(settings.topic_namespace, r) for r in region or [])]
    if not topics:
        raise typer.BadParameter("say which topics: --region north (repeatable) or --topic T")
    catalog = SchemaCatalog.load(settings.schemas_dir)

    async def run() -> list[dict[str, Any]]:
        found = endpoints(settings)
        if not ahead:
            # A typo would leave 17 subjects behind for a topic nobody writes.
            existing = await list_topics(found.kafka)
            missing = [t for t in topics if t not in existing]
            if missing:
                raise ConfigError(
                    f"topic(s) {', '.join(missing)} do not exist",
                    hint="check the name (`boxbus topology plan FILE` lists a network's "
                    "topics; `topology apply` creates them), or pass --ahead to register "
                    "before the topic exists")
        registry = SchemaRegistry(found.registry_url)
        done = []
        for t in topics:
            for event in catalog:
                subject = naming.subject(t, event.fullname)
                # Set on every subject, new or not: a registry's default may enforce nothing.
                await registry.set_compatibility(subject, Compatibility.BACKWARD_TRANSITIVE)
                schema_id = await registry.register(subject, event,
                                                    Compatibility.BACKWARD_TRANSITIVE)
                done.append({"subject": subject, "id": schema_id})
        return done

    done = asyncio.run(run())
    if json_out:
        print_json(done)
    else:
        console.print(f"registered {len(done)} subjects for {', '.join(topics)} "
                      "(compatibility BACKWARD_TRANSITIVE)")


@app.command("codegen")
def codegen_(
    check_only: Annotated[bool, typer.Option(
        "--check", help="Only check that the models match the schemas; exit 1 if not.")] = False,
) -> None:
    """Generate the Python event models (bus/events/models.py) from the schemas."""
    settings = settings_from_env()
    catalog = SchemaCatalog.load(settings.schemas_dir)
    if check_only:
        current = codegen.MODELS_PATH.read_text() if codegen.MODELS_PATH.exists() else ""
        if current != codegen.render(catalog):
            console.print(f"[red]{codegen.MODELS_PATH} does not match the schemas[/]: run "
                          "`boxbus schemas codegen`")
            raise typer.Exit(1)
        console.print("models match the schemas")
        return
    changed = codegen.write(catalog)
    console.print(f"{'wrote' if changed else 'unchanged:'} {codegen.MODELS_PATH}")
