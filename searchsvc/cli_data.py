"""The ``searchsvc data ...`` commands: upload, list and delete your datasets, through the SDK.

A dataset is a task folder stored in the service, so a spec can name it
(``tasks: [{name: sst2, dataset: sst2}]``) on a server that cannot read your disk.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from searchsvc.cli_study import _client


def _print_dataset(d: dict[str, Any]) -> None:
    print(f"dataset {d['id']} {d['name']!r}: {d['train_rows']} train / {d['dev_rows']} dev rows, "
          f"{d['total_bytes']} bytes, uploaded {d['created_at']}")


def cmd_data_upload(args: argparse.Namespace) -> int:
    dataset = _client(args).upload_dataset(args.path, name=args.name)
    _print_dataset(dataset)
    print(dataset["id"])
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    for dataset in _client(args).datasets():
        _print_dataset(dataset)
    return 0


def cmd_data_delete(args: argparse.Namespace) -> int:
    _client(args).delete_dataset(args.dataset_id)
    print(f"deleted dataset {args.dataset_id}")
    return 0


def add_data_commands(sub: Any, client_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``data upload|list|delete`` under ``sub``."""
    data = sub.add_parser("data", help="upload and manage datasets (task folders stored in the service)")
    commands = data.add_subparsers(dest="data_command", required=True)
    p = commands.add_parser("upload", help="upload a task folder (train.jsonl, dev.jsonl, meta.json); prints its id last")
    p.add_argument("path")
    p.add_argument("--name", help="the dataset's name (default: the folder's name)")
    client_flags(p)
    p.set_defaults(func=cmd_data_upload)
    p = commands.add_parser("list", help="your datasets")
    client_flags(p)
    p.set_defaults(func=cmd_data_list)
    p = commands.add_parser("delete", help="delete a dataset (refused while an unfinished study uses it)")
    p.add_argument("dataset_id", type=int)
    client_flags(p)
    p.set_defaults(func=cmd_data_delete)
