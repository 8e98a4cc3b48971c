"""`onenet` command line: train the network, then ask it things.

Errors a user can meet print one line and exit 1; `--json` makes every answer machine-readable.
The uses (caption, words, similar, search, imagine, sql, explore, ...) are here; the operations
that run Prefect flows or talk to its server (train, evaluate, ingest, server, worker, ...) are in
onenet/operations.py, loaded by onenet/main.py when the command line names one (or asks for help),
so a question does not wait for Prefect to import.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import typer
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from answers.queries import Queries
from core import prefect_env
from core.errors import OnenetError, at_least
from core.workspace import ENV_VAR, Workspace
from models.imagine import ImagineConfig
from onenet.examples import examples_for
from onenet.explore import serve as serve_explorer
from warehouse.reads import held_out_samples

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__)
console = Console()
errors = Console(stderr=True)


@dataclasses.dataclass
class Context:
    workspace: Workspace
    json: bool


def _ctx(ctx: typer.Context) -> Context:
    return ctx.obj


@app.callback()
def main_options(
    ctx: typer.Context,
    workspace: Optional[str] = typer.Option(None, "--workspace", "-w", help=f"State directory (env {ENV_VAR}; default ./onenet-data)"),
    as_json: bool = typer.Option(False, "--json", help="Print answers as JSON."),
) -> None:
    ws = Workspace.at(workspace)
    prefect_env.configure(ws)  # before anything imports prefect
    prefect_env.CLI_SAYS_ERRORS = True
    ctx.obj = Context(ws, as_json)


def _queries(c: Context):

    return Queries.open(c.workspace)


def _emit(c: Context, data: Any, table: Table | None) -> None:
    if c.json:
        print(json.dumps(data, default=lambda o: dataclasses.asdict(o) if dataclasses.is_dataclass(o) else str(o), indent=2))
    elif table is not None:
        console.print(table)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table




@app.command()
def caption(
    ctx: typer.Context,
    photos: list[str] = typer.Argument(..., help="photo files"),
    beam: Optional[int] = typer.Option(None, help="beam width [default: the model's]"),
) -> None:
    """Caption photos (in the collection or not)."""
    c = _ctx(ctx)
    if beam is not None:
        at_least("--beam", beam)
    q = _queries(c)
    answers = [q.caption(p, beam_size=beam) for p in photos]
    table = _table("captions", "photo", "caption", "score")
    for a in answers:
        table.add_row(a["photo"], a["caption"], f"{a['score']:.3f}")
    _emit(c, answers, table)


@app.command()
def words(
    ctx: typer.Context, word: str, k: int = typer.Option(10, "-k"),
    plus: list[str] = typer.Option([], "--plus", help="add this word's vector (repeatable)"),
    minus: list[str] = typer.Option([], "--minus", help="subtract this word's vector (repeatable)"),
) -> None:
    """Words whose vectors are nearest to WORD (or to WORD + plus - minus)."""
    c = _ctx(ctx)
    rows = _queries(c).similar_words(word, k, plus, minus)
    title = " ".join([repr(word), *(f"+ {w}" for w in plus), *(f"- {w}" for w in minus)])
    table = _table(f"words like {title}", "word", "cosine")
    for w, s in rows:
        table.add_row(w, f"{s:.3f}")
    _emit(c, [{"word": w, "similarity": s} for w, s in rows], table)


@app.command()
def analogy(ctx: typer.Context, a: str, b: str, c_word: str = typer.Argument(..., metavar="C"), k: int = typer.Option(5, "-k")) -> None:
    """A is to B as C is to ?  (e.g. circle circles square)."""
    c = _ctx(ctx)
    rows = _queries(c).analogy(a, b, c_word, k)
    table = _table(f"{a} : {b} :: {c_word} : ?", "word", "cosine")
    for w, s in rows:
        table.add_row(w, f"{s:.3f}")
    _emit(c, [{"word": w, "similarity": s} for w, s in rows], table)


def _matches_table(title: str, matches) -> Table:
    table = _table(title, "image id", "file", "generated caption", "score")
    for m in matches:
        table.add_row(m.image_id[:12], m.path.rsplit("/", 1)[-1], m.caption or "", f"{m.score:.3f}")
    return table


@app.command()
def similar(
    ctx: typer.Context, photo_or_id: str, k: int = typer.Option(5, "-k"),
    plus: list[str] = typer.Option([], "--plus", help="add a photo, image id or description (repeatable)"),
    minus: list[str] = typer.Option([], "--minus", help="subtract a photo, image id or description (repeatable)"),
    show: Optional[str] = typer.Option(None, "--show", help="also draw the vector (photo + plus - minus) with the image decoder into this PNG"),
) -> None:
    """Photos that look like a photo file or a collection image id (or like it + plus - minus)."""
    c = _ctx(ctx)
    q = _queries(c)
    matches = q.similar_images(photo_or_id, k, plus, minus)
    title = " ".join([photo_or_id, *(f"+ {x!r}" for x in plus), *(f"- {x!r}" for x in minus)])
    if show:


        vector, _ = q.arithmetic_vector(photo_or_id, plus, minus)
        Path(show).expanduser().parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(q.draw_vector(vector).permute(1, 2, 0).numpy()).save(show)
        if not c.json:
            console.print(f"drew {title} into {show}")
    _emit(c, matches, _matches_table(f"photos like {title}", matches))


@app.command()
def search(
    ctx: typer.Context, text: str, k: int = typer.Option(5, "-k"),
    method: str = typer.Option(
        os.environ.get("ONENET_SEARCH_METHOD", "auto"),
        help="auto (the better measured recall), joint (caption encoder) or inversion (the article's); env ONENET_SEARCH_METHOD",
    ),
    rerank: Optional[int] = typer.Option(None, help="re-order this many nearest photos by how well the description fits each (the photo captioner's likelihood; 0: off) [default: as measured best]"),
) -> None:
    """Photos matching a description."""
    c = _ctx(ctx)
    q = _queries(c)
    result = q.search(text, k, method=method, rerank=rerank)
    _warn_unknown(c, q, result.unknown_words)
    _emit(c, result, _matches_table(f"photos for {text!r} (by {result.method})", result.matches))


def _warn_unknown(c, q, unknown: list[str]) -> None:
    if unknown and not c.json:
        hints = "; ".join(f"{w} (known: {', '.join(q.close_words(w)) or 'nothing close'})" for w in unknown)
        errors.print(f"[yellow]warning:[/] ignored unknown words: {hints}", highlight=False)


@app.command()
def opposite(ctx: typer.Context, text: str, k: int = typer.Option(5, "-k")) -> None:
    """The opposite of a description: photos nearest the image vector the decoder finds it least likely for."""
    c = _ctx(ctx)
    result = _queries(c).opposite(text, k)
    _emit(c, result, _matches_table(f"the opposite of {text!r}", result["nearest"]))


@app.command()
def imagine(
    ctx: typer.Context, text: str,
    output: str = typer.Option("imagined.png", "-o", "--output", help="PNG to write"),
    gif: Optional[str] = typer.Option(None, "--gif", help="also write the optimisation as an animated GIF"),
    strip: Optional[str] = typer.Option(None, "--strip", help="also write the optimisation as a PNG strip"),
    frames: int = typer.Option(8, help="--gif/--strip: snapshots taken"),
    restarts: int = typer.Option(4, help="polish runs from perturbations of the searched layout (the closest wins)"),
    steps: int = typer.Option(40, help="layout polish steps (the pixel refinement adds --pixel-steps)"),
    pixel_steps: int = typer.Option(30),
    seed: int = typer.Option(0),
    method: str = typer.Option("auto", help="decoder (the learned image decoder: --imagine-epochs at training), optimise (a sketch searched and optimised through the network), auto: decoder where the model has one"),
    refine: int = typer.Option(0, help="decoder: pixel refinement steps through the network from the decoded picture (0: none)"),
    candidates: int = typer.Option(8, help="decoder: pictures drawn from the description's nearest photos; the one the network reads closest to it is kept"),
) -> None:
    """Draw a picture for a description: decoded by the learned image decoder, or searched and optimised through the frozen network."""



    c = _ctx(ctx)
    q = _queries(c)
    want_frames = frames if (gif or strip) else 0
    cfg = ImagineConfig(size=q.checkpoint["encoder"]["image_size"], restarts=restarts, sketch_steps=steps, steps=pixel_steps, frames=want_frames, seed=seed,
                        candidates=candidates)
    result = q.imagine(text, cfg, method=method, refine=refine)
    to_image = lambda t: Image.fromarray(t.permute(1, 2, 0).numpy())  # noqa: E731
    Path(output).expanduser().parent.mkdir(parents=True, exist_ok=True)
    to_image(result["pixels"]).save(output)
    pictures = [to_image(f) for f in result["frames"]] + [to_image(result["pixels"])]
    if gif:
        pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=400, loop=0)
    if strip:
        side = pictures[0].width
        sheet = Image.new("RGB", (side * len(pictures), side), "white")
        for i, picture in enumerate(pictures):
            sheet.paste(picture, (i * side, 0))
        sheet.save(strip)
    summary = {"text": text, "output": output, "method": result["method"], "caption": result["caption"], "nll": result["nll"], "unknown_words": result["unknown_words"],
               "gif": gif, "strip": strip, "nearest": result["nearest"]}
    if result["unknown_words"] and not c.json:
        errors.print(f"[yellow]warning:[/] ignored unknown words: {', '.join(result['unknown_words'])}")
    _emit(c, summary, None)
    if not c.json:
        console.print(f"wrote {output}: the model captions it [bold]{escape(result['caption'])}[/] (NLL of your description {result['nll']:.2f})")
        console.print(_matches_table("nearest collection photos", result["nearest"]))


@app.command()
def explore(
    ctx: typer.Context, port: int = typer.Option(8765, help="0: any free port"),
    host: str = typer.Option("127.0.0.1", help="interface to listen on (loopback by default: the page has no login)"),
) -> None:
    """Serve the explorer web page: search box, results with captions, similar photos, words, word map."""
    c = _ctx(ctx)
    server = serve_explorer(c.workspace, host, port)
    console.print(f"onenet explorer on http://{host}:{server.server_address[1]}/  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def sql(
    ctx: typer.Context, query: str,
    limit: int = typer.Option(1000, "--limit", help="rows shown at most (the rest are counted); 0: none"),
    timeout: float = typer.Option(60.0, "--timeout", help="seconds a query may run before it is stopped"),
) -> None:
    """Run read-only SQL on the warehouse (tables: images, captions, model_versions, word_vectors, ...).
    A result too big to show goes to a file with `onenet export`."""
    c = _ctx(ctx)
    if timeout <= 0:
        raise OnenetError("--timeout must be more than 0 seconds")
    q = _queries(c)
    try:
        columns, rows = q.sql(query, limit=limit, timeout_s=timeout)
        more = q.sql_more_rows
        _warn_unknown(c, q, q.sql_unknown_words)
    finally:
        q.close()
    table = _table("", *columns)
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    _emit(c, [dict(zip(columns, row)) for row in rows], table)
    if more:  # after the rows (on stderr under --json, which stays one JSON document)
        (errors if c.json else console).print(
            f"{more:,} more rows not shown (--limit {limit}); all of them: `onenet export`, or a LIMIT in the query", soft_wrap=True)


@app.command()
def export(
    ctx: typer.Context,
    table: str = typer.Argument(..., help="a table or current_* view"),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="file to write [default: TABLE.FORMAT]"),
    fmt: str = typer.Option("parquet", "--format", help="parquet or csv"),
) -> None:
    """Export a warehouse table to Parquet (or CSV)."""

    c = _ctx(ctx)
    destination = Path(output or f"{table}.{fmt}")
    rows = _queries(c).export(table, destination, fmt)
    _emit(c, {"table": table, "rows": rows, "path": str(destination)}, None)
    if not c.json:
        console.print(f"wrote {rows} rows of {table} to {destination}")


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return "[" + ", ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in value[:4]) + f", ... ({len(value)} values)]"
    return str(value)


@app.command()
def tour(ctx: typer.Context) -> None:
    """A short tour of the four uses on the current model (what `make demo` prints)."""
    c = _ctx(ctx)
    q = _queries(c)
    console.rule(f"[bold]onenet tour[/] — model {q.version}")

    ex = examples_for(q.vocabulary)

    samples = held_out_samples(q.con, 5)
    held_out = "test" if samples and samples[0][3] == "test" else "validation"
    table = _table(f"1. caption this photo (held-out {held_out} photos)", "photo", "generated caption", "a human caption")
    for path, generated, human, _ in samples:
        table.add_row(path.rsplit("/", 1)[-1], generated, human)
    console.print(table)
    for word in ex.words:
        console.print(f"2. words like [bold]{word}[/]: " + ", ".join(f"{w} ({s:.2f})" for w, s in q.similar_words(word, 5)))
    for a, b, c_ in ex.analogies:
        answer = q.analogy(a, b, c_, 3)
        console.print(f"   analogy {a} : {b} :: {c_} : ? → " + ", ".join(f"{w} ({s:.2f})" for w, s in answer))
    if samples:
        first = str(c.workspace.path(samples[0][0]))
        name = samples[0][0].rsplit("/", 1)[-1]
        console.print(_matches_table(f"3. photos like {name} ({samples[0][1]})", q.similar_images(first, 3)))
    result = q.search(ex.query, 3)
    console.print(_matches_table(f"4. search: {ex.query!r} (by {result.method}: {q.search_choice()['reason']})", result.matches))
    minus, plus = ex.swap
    if samples and minus:
        first = str(c.workspace.path(samples[0][0]))
        console.print(_matches_table(f"   arithmetic: {samples[0][0].rsplit('/', 1)[-1]} - {minus!r} + {plus!r}", q.similar_images(first, 3, plus=[plus], minus=[minus])))
    shown = f'"{ex.query}"'
    console.print(f"More: onenet imagine {shown} -o out.png · onenet opposite {shown} · onenet latent · onenet explore")
    console.print(f"SQL: onenet sql \"SELECT word, freq FROM current_word_vectors ORDER BY freq DESC LIMIT 5\"  (workspace {c.workspace.root})")


def _release(error: BaseException) -> None:
    """Free what a failed command's frames still hold (DuckDB connections, query results) before
    the interpreter exits: DuckDB's bindings print a 'leaked instances' report for any left."""

    while error is not None:
        traceback.clear_frames(error.__traceback__)
        error.__traceback__ = None
        error = error.__context__ or error.__cause__
    gc.collect()


def command_names() -> set[str]:
    """The commands registered on `app` so far."""
    return {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}


def run(argv: list[str]) -> None:
    """Run the command line `argv` (global options first, Prefect configured: onenet/main.py)."""
    try:
        app(args=argv, prog_name="onenet")
    except OnenetError as e:
        errors.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True, highlight=False)
        _release(e)
        sys.exit(1)
    except KeyboardInterrupt:
        errors.print("[red]interrupted[/]")
        sys.exit(130)
