// java LeakServer HOST PORT N: a server that listens on HOST:PORT (port 0:
// any), accepts N connections, reads each to EOF in readUntilEofAndForget
// and never closes it (the sockets stay referenced, so no cleaner closes
// them): they sit in CLOSE_WAIT. Prints "listening HOST:PORT", "eof PEER"
// per connection, "done", then stays alive until its stdin closes.
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.ArrayList;
import java.util.List;

public class LeakServer {
    static final List<Socket> FORGOTTEN = new ArrayList<>();

    static ServerSocket listenForLeaks(String host, int port) throws IOException {
        ServerSocket listener = new ServerSocket();
        listener.bind(new InetSocketAddress(host, port));
        return listener;
    }

    static void readUntilEofAndForget(Socket socket) throws IOException {
        InputStream in = socket.getInputStream();
        byte[] buf = new byte[4096];
        while (in.read(buf) >= 0) {
        }
        // EOF: the peer closed. This code path forgets to close.
        FORGOTTEN.add(socket);
    }

    public static void main(String[] args) throws IOException {
        if (args.length != 3) {
            System.err.println("usage: java LeakServer HOST PORT N");
            System.exit(2);
        }
        ServerSocket listener = listenForLeaks(args[0], Integer.parseInt(args[1]));
        System.out.println("listening " + args[0] + ":" + listener.getLocalPort());
        System.out.flush();
        int n = Integer.parseInt(args[2]);
        for (int i = 0; i < n; i++) {
            Socket socket = listener.accept();
            readUntilEofAndForget(socket);
            System.out.println("eof " + socket.getRemoteSocketAddress());
            System.out.flush();
        }
        System.out.println("done");
        System.out.flush();
        while (System.in.read() >= 0) {
        }
    }
}
