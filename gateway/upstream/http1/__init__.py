"""The lean HTTP/1.1 client behind the transport interface: connections and their pool."""
