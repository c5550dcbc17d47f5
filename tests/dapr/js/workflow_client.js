// The official Dapr JS SDK's workflow client against `jetloom serve-http`, unchanged: it finds
// its "sidecar" at DAPR_HTTP_PORT, then starts, reads, raises to, pauses, resumes, terminates
// and purges workflow instances. Prints one JSON object of what it saw.
//
// Run by tests/dapr/test_dapr_js_sdk.py with the workflows of tests/cli_workflows.py hosted.
const { DaprClient, CommunicationProtocolEnum, LogLevel } = require("@dapr/dapr");

const suffix = process.argv[2] || "1";

async function statusOf(client, id) {
  return (await client.workflow.getWorkflowState(id)).runtimeStatus;
}

async function waitFor(client, id, wanted) {
  for (let i = 0; i < 200; i++) {
    const state = await client.workflow.getWorkflowState(id);
    if (wanted.includes(state.runtimeStatus)) return state;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${id} never reached ${wanted}`);
}

async function main() {
  const client = new DaprClient({
    daprHost: "127.0.0.1",
    daprPort: process.env.DAPR_HTTP_PORT,
    communicationProtocol: CommunicationProtocolEnum.HTTP,
    logger: { level: LogLevel.Error },
  });
  const seen = {};
  await client.start(); // waits for the sidecar: GET /v1.0/metadata

  // A string input is sent as text/plain "hi", passed to the workflow as-is.
  const id = await client.workflow.scheduleNewWorkflow("approval", "hi", `js-${suffix}`);
  seen.started = id;
  seen.running = (await waitFor(client, id, ["RUNNING"])).runtimeStatus;
  await client.workflow.pause(id);
  seen.after_pause = await statusOf(client, id);
  await client.workflow.resume(id);
  seen.after_resume = await statusOf(client, id);
  await client.workflow.raiseEvent(id, "approve", "yes");
  const done = await waitFor(client, id, ["COMPLETED", "FAILED"]);
  seen.completed = done.runtimeStatus;
  seen.input = done.properties["dapr.workflow.input"];
  seen.output = done.properties["dapr.workflow.output"];

  // A JSON input is its value.
  const doubled = await client.workflow.scheduleNewWorkflow("doubler", 21, `js-${suffix}-json`);
  seen.doubled = (await waitFor(client, doubled, ["COMPLETED"])).properties[
    "dapr.workflow.output"
  ];

  // Terminate and purge.
  const other = await client.workflow.scheduleNewWorkflow("approval", "x", `js-${suffix}-other`);
  await waitFor(client, other, ["RUNNING"]);
  await client.workflow.terminate(other);
  seen.terminated = (await waitFor(client, other, ["TERMINATED"])).runtimeStatus;
  await client.workflow.purge(doubled);
  await client.workflow.purge(other);
  await client.workflow.purge(id);
  try {
    await client.workflow.getWorkflowState(id);
    seen.after_purge = "still there";
  } catch (e) {
    seen.after_purge = "gone";
  }
  await client.stop();
  console.log(JSON.stringify(seen));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
