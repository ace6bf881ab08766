"""Runs a query over ksqlDB's WebSocket endpoint (`GET /ws/query?request=...`) with the
websocket-client package and prints the JSON messages it received, as one JSON array."""

import argparse
import json
import urllib.parse

import websocket


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="http://host:port")
    parser.add_argument("--sql", required=True)
    parser.add_argument("--earliest", action="store_true")
    args = parser.parse_args()
    properties = {"auto.offset.reset": "earliest"} if args.earliest else {}
    request = json.dumps({"ksql": args.sql, "streamsProperties": properties})
    address = args.url.replace("http://", "ws://") + "/ws/query?request=" + urllib.parse.quote(request)
    socket = websocket.create_connection(address, timeout=30)
    messages = []
    while True:
        opcode, data = socket.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        message = json.loads(data)
        messages.append(message)
        if "finalMessage" in message:
            break
    socket.close()
    print(json.dumps(messages))


if __name__ == "__main__":
    main()
