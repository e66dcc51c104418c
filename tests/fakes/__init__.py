"""What the tests build on, shared by every folder of tests/ (fixtures are in tests/conftest.py):

- providers: the fake providers, aiohttp servers on 127.0.0.1. FakeProvider (routes by path, records what reached
  it) with start_provider() and the handlers answering() and sending(); ChatProvider, OpenAI-compatible and scripted
  by model name (access_provider() is the access tests' preset); SurfacesProvider, ChatProvider with embeddings,
  images and a tool-calling model; FlakyProvider, failing at random for the soak.
- native: the providers of the APIs relayed natively, AnthropicProvider (Messages, count_tokens) and
  ResponsesProvider (the Responses API and its follow-ups), with the exact bytes they send.
- bodies: the chat request builder chat(), and what providers send back (chat_answer, chunk, event, DONE).
- tables: provider table entries and tables: entry, serving (more endpoints), table_of, one_provider,
  access_table, telemetry_table, shipped_table (the repository's providers.yaml with chosen providers moved to
  fakes).
- gateways: gateways in this process (start_gateway, gateway_app and the settings of each suite) and as processes
  (running, gateway_args); ROOT.
- net: loopback ports, raw-socket clients, a raw asyncio server, wait_listening and wait_for.
- access: keys files, a fake clock, a local OIDC issuer and a Redis-protocol server.
- telemetry: /metrics scraped into exact samples, and captured log events.
"""
