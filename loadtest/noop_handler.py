"""The benchmark's "stack ceiling" handler: answers every request of a batch with one constant body.

It imports nothing heavy and touches no torch, no image and no JSON, so a server running it
measures what TorchServe itself (frontend, batching, the worker protocol) costs per request. The
body is a real lenet5 answer of the size ours sends, so the network and frontend carry the same
bytes. Archived by loadtest/archives.py with the same model-config.yaml as our handler.
"""

_BODY = (b'{"model":"lenet5","label":"0","index":0,"probabilities":{"0":0.9999243021011353,'
         b'"1":1.0745070786761062e-07,"2":2.8606843322422355e-06,"3":3.1917105857154145e-07,'
         b'"4":1.3218358018691651e-05,"5":4.6128604945987646e-06,"6":5.065037294116337e-05,'
         b'"7":2.0271236542407108e-07,"8":1.8040888023186615e-06,"9":4.6054349553678185e-07}}')


class NoopHandler:
    def __init__(self):
        self.initialized = False

    def initialize(self, context):
        self.initialized = True

    def handle(self, data, context):
        return [_BODY] * len(data)
