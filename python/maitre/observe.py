"""What a server's ``run()`` sets up around the native server: the access log
handler (``access_log``) and the metrics slot and endpoint
(``metrics_listen``). With neither setting, nothing at all.

    observer = Observer(adj)              # nothing starts yet
    native = Server(..., {"metrics": observer.metrics, ...})
    with observer:                        # handler attached, endpoint serving
        native.run()
"""

from . import accesslog, metrics

__all__ = ["Observer"]


class Observer:
    def __init__(self, adj):
        self._access_log = adj.access_log
        self._listen = adj.metrics_listen
        self._block = None
        #: The slot the native server counts into (``hooks["metrics"]``), or None.
        self.metrics = None
        #: The running metrics endpoint, while ``run()`` serves.
        self.endpoint = None
        self._handler = None
        if self._listen:
            given = metrics.assigned()
            if given is not None:
                # A worker process: the master owns the block and the endpoint.
                block, index = given
                self.metrics = block.slot(index)
            else:
                self._block = metrics.MetricsBlock(1)
                self.metrics = self._block.slot(0)

    def __enter__(self):
        if self._block is not None:
            self.endpoint = metrics.start_endpoint(self._listen, self._block)
        try:
            if self._access_log:
                self._handler = accesslog.attach(self._access_log)
        except BaseException:
            self._stop_endpoint()
            raise
        return self

    def __exit__(self, *exc_info):
        if self._handler is not None:
            accesslog.detach(self._handler)
            self._handler = None
        self._stop_endpoint()
        return False

    def _stop_endpoint(self):
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None
