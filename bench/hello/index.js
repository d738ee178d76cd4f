// The ceiling: a worker that answers a static JSON body, run on the same paths as the
// real worker so that every figure can be read as a ratio to it.
const body = JSON.stringify({ batchId: "batch_hello", runs: ["run_hello"] });
export default {
  async fetch() {
    return new Response(body, { headers: { "content-type": "application/json" } });
  },
};
