// java LeakServer HOST PORT N EVERY: a server that listens on HOST:PORT
// (port 0: any), accepts N connections and reads each to EOF in
// readUntilEofAndForget, which closes it, except every EVERY-th connection:
// that code path forgets to close (the sockets stay referenced, so no
// cleaner closes them) and they sit in CLOSE_WAIT. Busy enough that the JIT
// compiles its hot methods, as a real server's. Prints "listening
// HOST:PORT", "leaked PEER" per forgotten connection, "done", then stays
// alive until its stdin closes.
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

    static boolean readUntilEofAndForget(Socket socket, boolean forget) throws IOException {
        InputStream in = socket.getInputStream();
        byte[] buf = new byte[4096];
        while (in.read(buf) >= 0) {
        }
        // EOF: the peer closed. One code path forgets to close.
        if (forget) {
            FORGOTTEN.add(socket);
            return true;
        }
        socket.close();
        return false;
    }

    public static void main(String[] args) throws IOException {
        if (args.length != 4) {
            System.err.println("usage: java LeakServer HOST PORT N EVERY");
            System.exit(2);
        }
        ServerSocket listener = listenForLeaks(args[0], Integer.parseInt(args[1]));
        System.out.println("listening " + args[0] + ":" + listener.getLocalPort());
        System.out.flush();
        int n = Integer.parseInt(args[2]);
        int every = Integer.parseInt(args[3]);
        for (int i = 0; i < n; i++) {
            Socket socket = listener.accept();
            if (readUntilEofAndForget(socket, i % every == every - 1)) {
                System.out.println("leaked " + socket.getRemoteSocketAddress());
                System.out.flush();
            }
        }
        System.out.println("done");
        System.out.flush();
        while (System.in.read() >= 0) {
        }
    }
}
