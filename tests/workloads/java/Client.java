// java Client HOST PORT N: a client that opens a new Socket for every
// request (connect and close in connectPerRequest), sends one HTTP request,
// reads the reply and closes first. Prints "done", then stays alive until
// its stdin closes (the tracer symbolizes stacks while the process lives).
// Run with only -XX:+PreserveFramePointer: no agent, no perf-map options.
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;

public class Client {
    static void connectPerRequest(InetSocketAddress server) throws IOException {
        Socket socket = new Socket();
        socket.connect(server, 5000);
        OutputStream out = socket.getOutputStream();
        out.write("GET / HTTP/1.1\r\nHost: tcptrace\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
        out.flush();
        InputStream in = socket.getInputStream();
        StringBuilder got = new StringBuilder();
        byte[] buf = new byte[4096];
        while (!got.toString().endsWith("\r\n\r\nok\n")) {
            int n = in.read(buf);
            if (n < 0) {
                throw new IOException("EOF before the reply: " + got);
            }
            got.append(new String(buf, 0, n, StandardCharsets.US_ASCII));
        }
        socket.close();
    }

    public static void main(String[] args) throws IOException {
        if (args.length != 3) {
            System.err.println("usage: java Client HOST PORT N");
            System.exit(2);
        }
        InetSocketAddress server = new InetSocketAddress(args[0], Integer.parseInt(args[1]));
        int n = Integer.parseInt(args[2]);
        for (int i = 0; i < n; i++) {
            connectPerRequest(server);
        }
        System.out.println("done");
        System.out.flush();
        while (System.in.read() >= 0) {
        }
    }
}
