"""Tools of Model Context Protocol servers for chat clients: connections and discovery (`link`, `hub`), the
tools as the gateway names them (`catalog`), and the chat loop that runs them for the model (`loop`)."""
