"""A small real MCP server over streamable HTTP (the SDK's MCPServer) with the filesystem server's
tool names, for the proxy's HTTP mode (the npm filesystem server speaks stdio only). Over stdio
(``stdio`` for PORT) it is a server that speaks the 2026-07-28 version there too (the npm one
speaks the handshake versions only).

Usage: python mcp_http_files.py PORT|stdio ROOT
"""

from __future__ import annotations

import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("http-files")
ROOT = Path(sys.argv[2])


def _inside(path: str) -> Path:
    p = Path(path).resolve()
    if not p.is_relative_to(ROOT):
        raise ValueError(f"{path} is outside {ROOT}")
    return p


@server.tool()
def read_text_file(path: str) -> str:
    """The file's text."""
    return _inside(path).read_text()


@server.tool()
def write_file(path: str, content: str) -> str:
    """Writes the file."""
    _inside(path).write_text(content)
    return f"wrote {path}"


@server.tool()
def move_file(source: str, destination: str) -> str:
    """Moves a file."""
    _inside(source).rename(_inside(destination))
    return f"moved {source}"


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
