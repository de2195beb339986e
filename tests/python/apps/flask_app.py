"""A small Flask application."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/")
def index():
    return "hello from flask"


@app.route("/items/<int:item>")
def item(item):
    return jsonify(item=item, q=request.args.get("q"))


@app.route("/echo", methods=["POST"])
def echo():
    data = request.get_data()
    return data, 200, {"Content-Type": "application/octet-stream", "X-Length": str(len(data))}
