"""The `curator` command. Thin: parse arguments, call one typed function, report errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from training import quiet

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Curator: art recommendations.")
data_app = typer.Typer(no_args_is_help=True, help="Create, import and split datasets.")
app.add_typer(data_app, name="data")

Force = Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")]
Seed = Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Random seed.")]
DataRef = Annotated[
    Path,
    typer.Option(
        help="A dataset directory, or tfds:NAME[:VERSION]: one published with `curator data "
        "publish-tfds` under $TFDS_DATA_DIR (default ~/tensorflow_datasets)."
    ),
]
DEFAULT_TRIALS = 4  # `curator train`'s search: configurations tried (docs/training.md)
DEFAULT_BUDGET_MINUTES = 8.0  # ... and no new trial after the finished ones took this long


@app.callback()
def options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show every log line: TensorFlow's INFO lines, CUDA, oneDNN and Keras notices.",
        ),
    ] = False,
) -> None:
    # Runs before any command, so before TensorFlow is imported (the commands import it lazily).
    if verbose:
        quiet.verbose()
    else:
        quiet.quiet()


@data_app.command("generate")
def generate(
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")],
    scale: Annotated[
        str, typer.Option(help="small, ugallery, or a number of artworks.")
    ] = "ugallery",
    seed: Seed = 0,
    force: Force = False,
) -> None:
    """Simulate an art marketplace (the embedded default dataset)."""
    from training.data.marketplace import MarketplaceConfig, generate_marketplace

    stats = generate_marketplace(MarketplaceConfig.at_scale(scale, seed=seed), out, overwrite=force)
    typer.echo(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in stats.items()))


@data_app.command("import-ugallery")
def import_ugallery(
    sales: Annotated[Path, typer.Option(help="valid_sales.csv")],
    artworks: Annotated[Path, typer.Option(help="valid_artworks.csv")],
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")],
    seed: Seed = 0,
    force: Force = False,
) -> None:
    """Import UGallery's real transactions, with labelled stand-in item features."""
    from training.atomic import refuse_output_over_inputs
    from training.data.dataset import save_dataset
    from training.data.importers import import_ugallery as run_import

    refuse_output_over_inputs(out, [sales, artworks])
    dataset, readme = run_import(sales, artworks, seed=seed)
    save_dataset(dataset, out, overwrite=force, readme=readme)
    typer.echo(f"wrote {out}: {dataset.n_items} artworks, {len(dataset.purchases)} purchases")


@data_app.command("import-ugallery-release")
def import_ugallery_release(
    inventory: Annotated[Path, typer.Option(help="ugallery_inventory.csv")],
    purchases: Annotated[Path, typer.Option(help="ugallery_purchases.csv")],
    embeddings: Annotated[Path, typer.Option(help="ugallery_resnet50_embeddings.npy")],
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")],
    trust_pickle: Annotated[
        bool, typer.Option("--trust-pickle", help="Allow unpickling the embeddings file.")
    ] = False,
    force: Force = False,
) -> None:
    """Import the public UGallery release (hashed ids, real ResNet-50 embeddings)."""
    from training.atomic import refuse_output_over_inputs
    from training.data.dataset import save_dataset
    from training.data.importers import import_ugallery_release as run_import

    refuse_output_over_inputs(out, [inventory, purchases, embeddings])
    dataset, readme = run_import(inventory, purchases, embeddings, trust_pickle=trust_pickle)
    save_dataset(dataset, out, overwrite=force, readme=readme)
    typer.echo(f"wrote {out}: {dataset.n_items} artworks, {len(dataset.purchases)} purchases")


@data_app.command("import-mmrec")
def import_mmrec(
    directory: Annotated[
        Path, typer.Option("--dir", help="MMRec directory: <name>.inter, image_feat.npy.")
    ],
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")],
    name: Annotated[
        str | None, typer.Option(help="Read <name>.inter (default: the only .inter file).")
    ] = None,
    text: Annotated[
        bool, typer.Option("--text/--no-text", help="Append text_feat.npy when present.")
    ] = True,
    force: Force = False,
) -> None:
    """Import an MMRec-layout benchmark (fixed train/valid/test split, image + text features)."""
    from training.atomic import refuse_output_over_inputs
    from training.data.dataset import save_dataset
    from training.data.mmrec import import_mmrec as run_import

    refuse_output_over_inputs(out, [directory])
    dataset, readme = run_import(directory, name=name, text=text)
    save_dataset(dataset, out, overwrite=force, readme=readme)
    n_valid, n_test = (0 if s is None else len(s) for s in (dataset.valid, dataset.test))
    typer.echo(
        f"wrote {out}: {dataset.n_items} items, {len(dataset.purchases)} training, "
        f"{n_valid} valid and {n_test} test interactions"
    )


@data_app.command("publish-tfds")
def publish_tfds(
    data: Annotated[Path, typer.Option(help="Dataset directory to publish.")],
    name: Annotated[str, typer.Option(help="Published name: lowercase letters, digits, _.")],
    tfds_dir: Annotated[
        Path | None,
        typer.Option(help="TFDS data directory (default: $TFDS_DATA_DIR, ~/tensorflow_datasets)."),
    ] = None,
) -> None:
    """Publish a dataset as a versioned TensorFlow Datasets dataset (`--data tfds:NAME`)."""
    from training.data.dataset import tfds_data_dir
    from training.data.tfds_format import publish

    root = tfds_dir or tfds_data_dir()
    spec = publish(data, name=name, data_dir=root)
    typer.echo(
        f"published {data} as {spec} under {root}: train with --data tfds:{name}; in Python, "
        f'tfds.load("curator_dataset/{name}-items", split="items", data_dir="{root}")'
    )


@data_app.command("holdout")
def holdout(
    data: DataRef,
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")],
    fraction: Annotated[
        float, typer.Option(help="Share of each user's artworks per split, in (0, 0.5).")
    ] = 0.2,
    seed: Seed = 0,
    force: Force = False,
) -> None:
    """Copy a dataset with a fixed random holdout split (valid.csv, test.csv)."""
    from training.atomic import refuse_output_over_inputs
    from training.data.dataset import open_dataset, save_dataset
    from training.data.history import check_holdout_fraction, holdout_split

    check_holdout_fraction(fraction)  # before the dataset is read
    refuse_output_over_inputs(out, [data])
    dataset = holdout_split(open_dataset(data), fraction=fraction, seed=seed)
    save_dataset(dataset, out, overwrite=force, readme=f"Holdout split of {data} (seed {seed}).\n")
    typer.echo(f"wrote {out}: {len(dataset.test)} test and {len(dataset.valid)} valid purchases")


@app.command("features")
def features(
    images: Annotated[
        Path,
        typer.Option(
            help="A folder of JPEG/PNG/WebP files (item_id = file name without "
            "extension) or a CSV of item_id,image_path."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Directory to write: features.npy, items.csv, extractor.keras, extractor.json."
        ),
    ],
    backbone: Annotated[str, typer.Option(help="resnet50 (the paper's) or efficientnetv2-b0.")] = (
        "resnet50"
    ),
    weights: Annotated[
        str,
        typer.Option(
            help="imagenet (downloaded by Keras, then cached), random (seeded: "
            "tests and demos) or the path of a local weights file."
        ),
    ] = "imagenet",
    items: Annotated[
        Path | None,
        typer.Option(
            help="Align rows to this items.csv (every item needs an image); it is copied to OUT."
        ),
    ] = None,
    purchases: Annotated[
        Path | None,
        typer.Option(help="A purchases.csv to copy into OUT, making it a complete dataset."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of --weights random.")] = 0,
    force: Force = False,
) -> None:
    """Image features for a dataset: photographs through a keras.applications backbone."""
    from training.atomic import refuse_output_over_inputs
    from training.images.batch import extract_features

    refuse_output_over_inputs(out, [images, items, purchases])
    summary = extract_features(
        images,
        out,
        backbone=backbone,
        weights=weights,
        batch_size=batch_size,
        items_csv=items,
        purchases_csv=purchases,
        seed=seed,
        overwrite=force,
        echo=typer.echo,
    )
    typer.echo(
        f"wrote {out}: {summary['images']} images -> {summary['dim']}-d {summary['backbone']} "
        "features"
    )


@app.command("train")
def train(
    data: DataRef,
    out: Annotated[Path, typer.Option(help="Run directory, e.g. runs/curator.")],
    config: Annotated[
        str | None,
        typer.Option(help="YAML/TOML file or preset (curator, curatornet-paper); the base."),
    ] = None,
    trials: Annotated[
        int,
        typer.Option(help="Configurations tried on the validation split (1: the config as given)."),
    ] = DEFAULT_TRIALS,
    budget_minutes: Annotated[
        float,
        typer.Option(
            help="No new trial starts after the finished ones took this long, and a later one "
            "still training then ends after that epoch (the first 2 always run to their end)."
        ),
    ] = DEFAULT_BUDGET_MINUTES,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint.")
    ] = False,
    export: Annotated[
        Path | None,
        typer.Option(help="Then export the run into this exports root (as `curator export`)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train on this many processes (tf.distribute MultiWorkerMirroredStrategy): "
            "started here, or one per machine with your own TF_CONFIG (docs/training.md).",
        ),
    ] = 1,
) -> None:
    """Train the towers: choose a configuration on the validation split, keep its best epoch."""
    from training.atomic import refuse_non_directory

    if not budget_minutes >= 0:  # NaN too: it compared as no budget at all
        raise ValueError(f"--budget-minutes must be >= 0 (inf: no budget), got {budget_minutes}")
    for directory in (out, export) if export is not None else (out,):
        refuse_non_directory(directory)  # before any work, TensorFlow's import included
    import os
    import shutil

    from training.config import load_config
    from training.data.dataset import open_dataset
    from training.distributed import from_environment, launch_local, remove_scratch
    from training.search import adapt_to_data, search
    from training.train import train as run_training

    if workers > 1 and not os.environ.get("TF_CONFIG"):  # start the workers, then wait
        status = launch_local(sys.argv[1:], workers, out)
        if status:
            raise typer.Exit(status)
        remove_scratch(out, workers)  # the other workers' copies and logs
        return
    cluster = from_environment(workers) if workers > 1 else None
    if cluster is not None:
        # every worker must take the same decisions: no time budget (it would differ)
        budget_minutes = float("inf")
        if not cluster.chief:
            # this worker's copy starts as the chief's run (resumed from the same checkpoint)
            scratch = cluster.output_dir(out)
            shutil.rmtree(scratch, ignore_errors=True)
            if resume and out.exists():
                shutil.copytree(out, scratch)
            out, export = scratch, None
    dataset = open_dataset(data)
    base = load_config(config)
    if trials == 1:
        result = run_training(
            dataset, adapt_to_data(base, dataset), out, resume=resume, workers=cluster
        )
        best_metrics, best_epoch, epochs, seconds = (
            result.best_metrics,
            result.best_epoch,
            result.epochs_run,
            result.seconds,
        )
        chosen = ""
    else:
        record = search(
            dataset,
            base,
            out,
            trials=trials,
            budget_s=budget_minutes * 60,
            resume=resume,
            progress=typer.echo,
            workers=cluster,
        )
        best = record["trials"][record["chosen"]]
        best_metrics, best_epoch, epochs = best["validation"], best["best_epoch"], best["epochs"]
        seconds = sum(t["seconds"] for t in record["trials"])
        chosen = f" (chosen: trial {best['number']} of {len(record['trials'])}, {out}/search.json)"
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in best_metrics.items())
    typer.echo(
        f"trained {out} in {seconds:.0f} s: best epoch {best_epoch} of {epochs} "
        f"(validation {metrics}){chosen}"
    )
    if export is not None:
        from training.export import export_run

        version = export_run(out, dataset, export, progress=typer.echo)
        typer.echo(f"exported {out} to {version}")


@app.command("evaluate")
def evaluate(
    data: DataRef,
    protocol: Annotated[str, typer.Option(help="replay or holdout.")] = "replay",
    baselines: Annotated[
        str | None,
        typer.Option(
            help='Comma-separated baselines (default: all that apply; "": none, the --model '
            "rows alone)."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Holdout split: test or valid.")] = "test",
    out: Annotated[Path | None, typer.Option(help="Write metrics.json and per-test CSVs.")] = None,
    force: Force = False,
    model: Annotated[
        list[Path] | None, typer.Option(help="A training run to add as a row; repeatable.")
    ] = None,
    seed: Seed = 0,
) -> None:
    """Rank real purchases with every method and print the paper's table."""
    from training.data.dataset import open_dataset
    from training.evaluation.evaluate import evaluate as run_evaluation

    names = None if baselines is None else [n.strip() for n in baselines.split(",") if n.strip()]
    if names == [] and not model:
        raise ValueError(
            "--baselines names no baseline and there is no --model: nothing to evaluate"
        )
    if out is not None:
        from training.atomic import refuse_output_over_inputs

        refuse_output_over_inputs(out, [data, *(model or [])])
    dataset = open_dataset(data)
    models = []
    if model:
        from training.trained_towers import load_run_recommender

        models = [load_run_recommender(run, dataset) for run in model]
        _warn_of_runs_on_other_data(model, dataset)
    result = run_evaluation(
        dataset,
        protocol=protocol,
        baselines=names,
        models=models,
        split=split,
        out=out,
        overwrite=force,
        seed=seed,
        progress=True,
    )
    typer.echo(result.table())
    if result.comparisons:
        typer.echo(
            "\neach model against each baseline, test by test: the mean difference and its 95% "
            "bootstrap interval over the tests (docs/evaluation.md)\n"
        )
        typer.echo(result.comparison_table())
    if out is not None:
        typer.echo(f"\nwrote {out}/metrics.json and per-test CSVs")


def _warn_of_runs_on_other_data(runs: list[Path], dataset) -> None:
    """A warning for each run whose dataset.json names other data than `dataset`: its validation
    and test purchases may be among what it trained on."""
    from training.train import DATASET_FILE, data_fingerprint, other_data

    if not any((run / DATASET_FILE).exists() for run in runs):
        return  # runs from before dataset.json: nothing to compare, nothing to hash
    fingerprint = data_fingerprint(dataset)
    for run in runs:
        other = other_data(run / DATASET_FILE, fingerprint)
        if other is not None:
            typer.echo(
                f"warning: {run} was trained on other data ({other}); the purchases evaluated "
                "here may be among those it trained on",
                err=True,
            )


@app.command("export")
def export(
    run: Annotated[Path, typer.Option(help="A finished training run, e.g. runs/curator.")],
    out: Annotated[Path, typer.Option(help="Exports root; the next version goes inside.")],
    data: Annotated[
        Path | None, typer.Option(help="Catalogue to index (default: the run's dataset).")
    ] = None,
) -> None:
    """Export a run: tower and retrieval SavedModels, catalogue and manifest."""
    from training.atomic import refuse_non_directory

    refuse_non_directory(out)  # before any work, TensorFlow's import included
    from training.data.dataset import open_dataset
    from training.export import export_run
    from training.run_files import read_json

    if data is None:
        summary = run / "summary.json"
        if not summary.exists():
            raise ValueError(f"{run} is not a finished training run (no summary.json)")
        data = read_json(summary, keys=("dataset",))["dataset"]
        if not isinstance(data, str):
            raise ValueError(f"{summary}: 'dataset' is not a dataset's location: {data!r}")
    version = export_run(run, open_dataset(data, mmap=True), out, progress=typer.echo)
    typer.echo(f"exported {run} to {version}")


@app.command("serve")
def serve(
    model: Annotated[
        Path | None, typer.Option(help="Exports root (default: $CURATOR_MODEL_DIR or exports/).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    image_extractor: Annotated[
        Path | None,
        typer.Option(
            help="Directory of a saved image extractor (`curator features --out`): enables "
            "POST /v1/items/image."
        ),
    ] = None,
) -> None:
    """Serve recommendations over HTTP from the newest export (settings: docs/serving.md)."""
    import uvicorn
    from pydantic import ValidationError

    from serving.app import create_app
    from serving.export_loader import newest_version
    from serving.http_protocol import bounded_httptools_protocol
    from serving.settings import Settings, describe_settings_error

    given = {"model_dir": model, "host": host, "port": port, "image_extractor": image_extractor}
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as error:
        raise ValueError(describe_settings_error(error)) from None
    newest_version(settings.model_dir)  # "no export found" before a database is made beside it
    app = create_app(settings)
    # clear errors before uvicorn starts: the export (loaded once, here: the app's start-up
    # then finds it loaded), and an extractor that fits it
    service = app.state.service
    service.reload()
    served = service.current().model
    extractor = service.extractor
    if extractor is not None and extractor.dim != served.feature_dim:
        raise ValueError(
            f"--image-extractor {settings.image_extractor}: gives {extractor.dim}-d features "
            f"but the model in {settings.model_dir} takes {served.feature_dim}"
        )
    typer.echo(
        f"serving {settings.model_dir} on http://{settings.host}:{settings.port} (docs: /docs)"
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        limit_concurrency=settings.max_connections,
        http=bounded_httptools_protocol(
            settings.max_head_bytes,
            settings.request_read_seconds,
            settings.min_request_bytes_per_second,
            on_refused=lambda status: service.metrics.refused.labels(str(status)).inc(),
        ),
    )


@app.command("demo")
def demo(
    model: Annotated[Path, typer.Option(help="Exports root.")] = Path("exports"),
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    keep_serving: Annotated[
        bool, typer.Option(help="Keep serving after the examples (until Ctrl-C).")
    ] = True,
) -> None:
    """Start the service on the newest export and show example requests and answers."""
    from serving.demo import run_demo

    run_demo(model, host, port, keep_serving, echo=typer.echo)


def main() -> None:
    """Entry point: expected errors (bad input, bad arguments) exit 2 with one clear line."""
    try:
        status = app(standalone_mode=False)  # a typer.Exit comes back as its exit code
        if isinstance(status, int) and status:
            sys.exit(status)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as error:  # usage errors arrive here in non-standalone mode
        if hasattr(error, "show"):
            error.show()
        sys.exit(getattr(error, "exit_code", 2))


if __name__ == "__main__":
    main()
